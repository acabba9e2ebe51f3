// The console's own script: live notices from /api/v1/stream refresh the page's live regions
// (htmx fragments listening for "swf-commit"), redraw the charts and feed the stream page.
(function () {
  "use strict";
  const body = document.body;
  const scope = {
    execution: body.dataset.execution || null,
    run: body.dataset.run ? Number(body.dataset.run) : null,
  };
  const REGION_INTERVAL = 500;  // ms between two refreshes of the live regions
  const CHART_INTERVAL = 2000;  // ms between two redraws of the diagram and the timeline
  const liveState = document.getElementById("live");

  // Leading and trailing throttle: the first notice acts at once, later ones within the
  // interval collapse into one more call at its end, so the last state is always shown.
  function throttle(action, interval) {
    let last = 0, timer = null;
    return function () {
      if (timer !== null) return;
      const wait = Math.max(0, last + interval - Date.now());
      timer = setTimeout(function () { timer = null; last = Date.now(); action(); }, wait);
    };
  }

  function concerns(notice) {
    if (scope.execution && notice.executions.indexOf(scope.execution) >= 0) return true;
    if (scope.run !== null && notice.runs.indexOf(scope.run) >= 0) return true;
    return !scope.execution && scope.run === null;
  }

  const refreshRegions = throttle(function () {
    if (window.htmx) window.htmx.trigger(body, "swf-commit");
  }, REGION_INTERVAL);
  const redrawCharts = throttle(function () { drawTimeline(); drawDiagram(); }, CHART_INTERVAL);

  function setLive(text, css) {
    if (!liveState) return;
    liveState.textContent = text;
    liveState.className = "live-state " + css;
  }

  let connectedBefore = false;
  function connect() {
    const source = new EventSource("/api/v1/stream");
    source.addEventListener("hello", function (e) {
      const hello = JSON.parse(e.data);
      setLive("live · position " + hello.head, "on");
      if (connectedBefore) { refreshRegions(); redrawCharts(); }  // missed while away
      connectedBefore = true;
    });
    source.addEventListener("commit", function (e) {
      const notice = JSON.parse(e.data);
      setLive("live · position " + notice.head, "on");
      document.dispatchEvent(new CustomEvent("swf-notice", { detail: notice }));
      if (concerns(notice)) { refreshRegions(); redrawCharts(); }
    });
    source.addEventListener("missed", function () { refreshRegions(); redrawCharts(); });
    source.onerror = function () { setLive("reconnecting", "off"); };
  }

  // -- the execution page's charts ----------------------------------------------------------

  const timeline = document.getElementById("timeline");
  function drawTimeline() {
    if (!timeline || !window.Plotly) return;
    fetch(timeline.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (series) {
        const names = [["stf_files", "STF files"], ["tf_samples", "TF samples"],
                       ["slices_completed", "slices completed"], ["slices_failed", "slices failed"]];
        const traces = names.map(function (pair) {
          const s = series[pair[0]];
          return { x: s.time, y: s.total, name: pair[1], mode: "lines", line: { shape: "hv" } };
        });
        window.Plotly.react(timeline, traces, {
          margin: { t: 10, r: 10, b: 40, l: 50 }, height: 300,
          xaxis: { title: { text: "event time (UTC)" } }, yaxis: { title: { text: "count" } },
          legend: { orientation: "h" },
        }, { displaylogo: false, responsive: true });
        timeline.dataset.drawn = String(Date.now());
      })
      .catch(function (problem) { timeline.textContent = "timeline unavailable (" + problem + ")"; });
  }

  const diagram = document.getElementById("diagram");
  let diagrams = 0;
  function drawDiagram() {
    if (!diagram || !window.mermaid) return;
    fetch(diagram.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (answer) {
        diagrams += 1;
        return window.mermaid.render("sequence-" + diagrams, answer.mermaid);
      })
      .then(function (result) {
        diagram.innerHTML = result.svg;
        diagram.dataset.drawn = String(diagrams);
      })
      .catch(function (problem) { diagram.textContent = "diagram unavailable (" + problem + ")"; });
  }

  // -- the live stream page -----------------------------------------------------------------

  const stream = document.getElementById("stream");
  if (stream) {
    const rows = stream.querySelector("tbody");
    const form = document.getElementById("stream-filters");
    const count = document.getElementById("stream-count");
    const pause = document.getElementById("stream-pause");
    let seen = 0, paused = false;
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
    });
    function wanted(row) {
      const want = function (name, value) {
        const text = form.elements[name].value.trim();
        return !text || String(value || "").indexOf(text) >= 0;
      };
      return want("msg_type", row.msg_type) && want("execution_id", row.execution_id) &&
             want("sender", row.sender);
    }
    function cell(tr, text, href) {
      const td = document.createElement("td");
      if (href) {
        const a = document.createElement("a");
        a.href = href;
        a.textContent = text;
        td.appendChild(a);
      } else {
        td.textContent = text === null || text === undefined ? "-" : String(text);
      }
      tr.appendChild(td);
    }
    document.addEventListener("swf-notice", function (e) {
      const notice = e.detail;
      seen += notice.events;
      count.textContent = seen + " events" + (notice.omitted ? " (" + notice.omitted + " not listed in the last batch)" : "");
      if (paused) return;
      notice.rows.forEach(function (row) {
        if (!wanted(row)) return;
        const tr = document.createElement("tr");
        if (row.status !== "ok") tr.className = "rejected";
        cell(tr, row.position, "/messages/" + row.position);
        cell(tr, row.time);
        cell(tr, row.msg_type);
        cell(tr, row.sender);
        cell(tr, row.run_id);
        cell(tr, row.execution_id, row.execution_id ? "/executions/" + encodeURIComponent(row.execution_id) : null);
        cell(tr, row.destination);
        cell(tr, row.status);
        rows.insertBefore(tr, rows.firstChild);
      });
      while (rows.children.length > 500) rows.removeChild(rows.lastChild);
    });
  }

  // -- start ----------------------------------------------------------------------------------

  if (window.mermaid) {
    window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict",
                                sequence: { showSequenceNumbers: false } });
  }
  drawTimeline();
  drawDiagram();
  connect();
})();
