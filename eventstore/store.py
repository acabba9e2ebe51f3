"""The event store: append (batched, idempotent), read, follow. CONTRACT STUB - being implemented.

Public API (other packages rely on exactly this):

    store = EventStore(url=None, *, namespace=None)   # url None -> $SWF_DB or sqlite:///swf.db;
                                                     # schema upgraded automatically on open
    store.engine                                    # the SQLAlchemy Engine (projections share it)
    result = store.append(iterable_of_Incoming)     # one transaction; returns AppendResult
    result.events      -> list[Event]   newly stored events, in position order, data filled
    result.duplicates  -> list[str]     event_ids already stored (or repeated in the batch)
    result.rejected    -> int           how many of result.events were stored as rejected
    store.read(after=0, until=None, *, execution_id=None, run_id=None, msg_types=None,
               namespace=None, since=None, until_time=None, valid=None, limit=None)
                                        -> Iterator[Event] in position order, data filled
    store.follow(after=0, *, stop=None, poll_interval=0.05) -> Iterator[Event]
                                        catch up, then yield new events as they commit, never
                                        skipping one; ends when the threading.Event `stop` is set
    store.head() -> int                 highest committed position (0 when empty)
    store.close()
"""
