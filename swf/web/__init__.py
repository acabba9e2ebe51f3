"""The operator console (``swf serve``): web pages that follow the store live, the JSON API
under ``/api/v1/``, and the monitor endpoints upstream agents post to (DESIGN section 9)."""
