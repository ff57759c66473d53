// AssetMint review: keyboard review on the contact sheet, decisions, undo and finalize via fetch, live counters, an
// image viewer (full size, compare two) and card density. No inline scripts (the Content-Security-Policy forbids
// them); every text from the server is set with textContent, never as HTML.
(function () {
  "use strict";

  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var statusBox = document.getElementById("status");
  var summaryBox = document.getElementById("summary");
  var publishBox = document.getElementById("publish");
  var viewer = document.getElementById("viewer");
  var DENSITY_KEY = "assetmint.review.density";
  var APPROVED_STATES = ["approved", "finalized", "finalize_failed", "published"];
  var undoStack = [];
  var picks = [];
  var viewerList = null;
  var viewerIndex = 0;
  var polling = false;

  function say(message, isError) {
    if (!statusBox) return;
    statusBox.textContent = message;
    statusBox.className = "status " + (isError ? "status-error" : "status-ok");
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) throw new Error(data.error || ("request failed with HTTP " + response.status));
        return data;
      });
    });
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.error || ("request failed with HTTP " + response.status));
        return data;
      });
    });
  }

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll(".card"));
  }

  function cardById(candidateId) {
    return cards().filter(function (card) { return card.getAttribute("data-candidate") === candidateId; })[0] || null;
  }

  function focusedCard() {
    var element = document.activeElement;
    return element && element.closest ? element.closest(".card") : null;
  }

  function show(card) {
    card.focus();
    card.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    var list = cards();
    if (!list.length) return;
    var here = list.indexOf(focusedCard());
    var next = here < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, here + step));
    show(list[next]);
  }

  function nextPending(card) {
    var list = cards();
    var here = list.indexOf(card);
    var after = list.slice(here + 1).concat(list.slice(0, Math.max(here, 0)));
    return after.filter(function (c) { return c.getAttribute("data-state") === "selected"; })[0] || null;
  }

  function field(form, name) {
    var input = form.elements.namedItem(name);
    return input && input.value ? input.value.trim() : "";
  }

  function setState(card, state) {
    card.setAttribute("data-state", state);
    var label = card.querySelector('[data-role="state"]');
    if (label) {
      label.textContent = state;
      label.className = "state state-" + state;
    }
  }

  // --- live counters ------------------------------------------------------------------------------------------

  function applySummary(data) {
    if (!data) return;
    if (summaryBox) {
      summaryBox.querySelector('[data-role="run-status"]').textContent = data.status;
      var counts = summaryBox.querySelector('[data-role="counts"]');
      while (counts.firstChild) counts.removeChild(counts.firstChild);
      Object.keys(data.counts).sort().forEach(function (state) {
        var span = document.createElement("span");
        span.className = "state state-" + state;
        span.textContent = data.counts[state] + " " + state;
        counts.appendChild(span);
        counts.appendChild(document.createTextNode(" "));
      });
    }
    Object.keys(data.filters || {}).forEach(function (name) {
      var link = document.querySelector('nav.filters a[data-filter="' + name + '"] [data-role="filter-count"]');
      if (link) link.textContent = String(data.filters[name]);
    });
    Array.prototype.forEach.call(document.querySelectorAll("section.job[data-job]"), function (section) {
      section.setAttribute("data-approved", String((data.approved_per_job || {})[section.getAttribute("data-job")] || 0));
    });
    cards().forEach(function (card) {
      var state = (data.states || {})[card.getAttribute("data-candidate")];
      if (state && state !== card.getAttribute("data-state")) setState(card, state);
    });
    if (publishBox && data.publish) renderPublish(publishBox, data.publish);
  }

  function refresh() {
    if (!summaryBox) return Promise.resolve(null);
    return getJSON(summaryBox.getAttribute("data-summary-url")).then(function (data) {
      applySummary(data);
      return data;
    });
  }

  // --- decisions ----------------------------------------------------------------------------------------------

  function overKeep(card) {
    var section = document.querySelector('section.job[data-job="' + card.getAttribute("data-job") + '"]');
    if (!section || APPROVED_STATES.indexOf(card.getAttribute("data-state")) >= 0) return null;
    var keep = parseInt(section.getAttribute("data-keep-top-k"), 10);
    var approved = parseInt(section.getAttribute("data-approved"), 10) || 0;
    if (!(approved >= keep)) return null;
    return "This prompt keeps the top " + keep + " and " + approved + " already " + (approved === 1 ? "is" : "are") +
      " approved. Approve " + card.getAttribute("data-candidate") + " anyway (" + (approved + 1) + " of " + keep + ")?";
  }

  function decide(card, decision) {
    var form = card.querySelector("form.decide");
    if (!form || getComputedStyle(form).display === "none") {
      say(card.getAttribute("data-candidate") + " is " + card.getAttribute("data-state") + "; press u to undo the last decision", true);
      return;
    }
    if (decision === "approve") {
      var warning = overKeep(card);
      if (warning && !window.confirm(warning)) {
        say("not approved: keep-top-k already reached", true);
        return;
      }
    }
    var body = { decision: decision, comment: field(form, "comment") };
    var reason = field(form, "override_reason");
    if (reason) body.override_reason = reason;
    card.setAttribute("aria-busy", "true");
    post(form.getAttribute("action"), body).then(function (data) {
      setState(card, data.state);
      applySummary(data.summary);
      var undoForm = card.querySelector("form.undo");
      if (undoForm) undoStack.push({ id: data.candidate_id, action: undoForm.getAttribute("action") });
      updateTools();
      say(data.candidate_id + ": " + data.state + " (u to undo)", false);
      if (card.matches("li.card")) {
        var next = nextPending(card);
        if (next) show(next);
        else say(data.candidate_id + ": " + data.state + "; no pending candidates left", false);
      }
    }).catch(function (error) {
      say(error.message, true);
    }).then(function () {
      card.removeAttribute("aria-busy");
    });
  }

  function undo(entry) {
    if (!entry) {
      say("nothing to undo in this session", true);
      return;
    }
    post(entry.action, {}).then(function (data) {
      var card = cardById(data.candidate_id);
      if (card) {
        setState(card, data.state);
        show(card);
      }
      applySummary(data.summary);
      say(data.candidate_id + ": back to " + data.state, false);
    }).catch(function (error) {
      say(error.message, true);
    }).then(updateTools);
  }

  // --- finalize -----------------------------------------------------------------------------------------------

  function renderPublish(box, data) {
    var progress = box.querySelector('[data-role="progress"]');
    var text = data.approved + " approved · " + data.finalized + " finalized · " + data.published + " published · " +
      data.finalize_failed + " failed";
    if (data.running) text += " · finalizing…";
    else if (data.finished_at) text += " · done";
    progress.textContent = text;
    var error = box.querySelector('[data-role="error"]');
    error.hidden = !data.error;
    error.textContent = data.error || "";
    var list = box.querySelector('[data-role="failures"]');
    while (list.firstChild) list.removeChild(list.firstChild);
    (data.failure_lines || []).forEach(function (line) {
      var item = document.createElement("li");
      item.textContent = line;
      list.appendChild(item);
    });
    box.setAttribute("data-running", data.running ? "true" : "false");
  }

  function poll() {
    if (polling) return;
    polling = true;
    refresh().then(function (data) {
      polling = false;
      if (data && data.publish.running) window.setTimeout(poll, 700);
      else if (data && data.publish.finished_at) {
        say("finalize done: " + data.publish.finalized + " finalized, " + data.publish.finalize_failed + " failed", !!data.publish.error);
      }
    }).catch(function (error) {
      polling = false;
      say(error.message, true);
    });
  }

  function finalize(form) {
    refresh().then(function (data) {
      var counts = data.counts;
      var waiting = (counts.approved || 0) + (counts.finalize_failed || 0) + (counts.finalized || 0);
      var question = "Finalize and publish " + waiting + " approved asset" + (waiting === 1 ? "" : "s") + " to " +
        form.getAttribute("data-target") + "? Publishing is create-only: it cannot be undone.";
      if (!window.confirm(question)) {
        say("finalize cancelled", false);
        return null;
      }
      return post(form.getAttribute("action"), {}).then(function (status) {
        renderPublish(publishBox, status);
        poll();
      });
    }).catch(function (error) { say(error.message, true); });
  }

  // --- viewer: one image full size, or two side by side ---------------------------------------------------------

  function itemOf(card) {
    var img = card.querySelector("img[data-full]") || document.querySelector("img.full");
    var score = card.getAttribute("data-score");
    return {
      src: img ? (img.getAttribute("data-full") || img.getAttribute("src")) : "",
      title: card.getAttribute("data-candidate") + (score ? " · CLIPScore " + Number(score).toFixed(4) : "") +
        " · " + card.getAttribute("data-state")
    };
  }

  function fill(items, title) {
    var panes = viewer.querySelector('[data-role="viewer-panes"]');
    while (panes.firstChild) panes.removeChild(panes.firstChild);
    items.forEach(function (item) {
      var figure = document.createElement("figure");
      figure.className = "pane";
      var img = document.createElement("img");
      img.src = item.src;
      img.alt = item.title;
      var caption = document.createElement("figcaption");
      caption.textContent = item.title;
      figure.appendChild(img);
      figure.appendChild(caption);
      panes.appendChild(figure);
    });
    viewer.setAttribute("data-panes", String(items.length));
    viewer.querySelector('[data-role="viewer-title"]').textContent = title;
  }

  function openViewer(items, title, list, index) {
    if (!viewer) return;
    viewerList = list || null;
    viewerIndex = index || 0;
    fill(items, title);
    viewer.hidden = false;
    document.documentElement.classList.add("viewing");
    viewer.querySelector(".viewer-close").focus();
  }

  function closeViewer() {
    if (!viewer || viewer.hidden) return;
    viewer.hidden = true;
    document.documentElement.classList.remove("viewing");
    if (window.location.hash === "#view") history.replaceState(null, "", window.location.pathname + window.location.search);
    if (viewerList && viewerList[viewerIndex]) show(viewerList[viewerIndex]);
    else {
      var card = document.querySelector(".card");
      if (card) card.focus();
    }
  }

  function viewerStep(step) {
    if (viewerList) {
      var index = Math.min(viewerList.length - 1, Math.max(0, viewerIndex + step));
      if (index === viewerIndex) return;
      viewerIndex = index;
      fill([itemOf(viewerList[index])], (index + 1) + " of " + viewerList.length);
      return;
    }
    var link = document.querySelector(step > 0 ? "nav.pager a.next" : "nav.pager a.prev");
    if (link) window.location.href = link.getAttribute("href") + "#view";
  }

  function viewCard(card) {
    var list = cards();
    var index = list.indexOf(card);
    openViewer([itemOf(card)], (index + 1) + " of " + list.length, list, index);
  }

  function viewDetail() {
    var card = document.querySelector(".card");
    if (card) openViewer([itemOf(card)], card.getAttribute("data-candidate"), null, 0);
  }

  // --- compare ------------------------------------------------------------------------------------------------

  function updateTools() {
    var compareButton = document.querySelector("button.compare-open");
    if (compareButton) {
      compareButton.disabled = picks.length !== 2;
      compareButton.querySelector('[data-role="picked"]').textContent = String(picks.length);
    }
    var undoButton = document.querySelector("button.undo-last");
    if (undoButton) undoButton.disabled = undoStack.length === 0;
  }

  function pick(card, on) {
    var id = card.getAttribute("data-candidate");
    picks = picks.filter(function (p) { return p !== id; });
    if (on) {
      picks.push(id);
      if (picks.length > 2) {
        var dropped = cardById(picks.shift());
        if (dropped) dropped.querySelector("input.compare-pick").checked = false;
      }
    }
    card.querySelector("input.compare-pick").checked = on;
    card.classList.toggle("picked", on);
    cards().forEach(function (c) { c.classList.toggle("picked", picks.indexOf(c.getAttribute("data-candidate")) >= 0); });
    updateTools();
  }

  function compare() {
    if (picks.length !== 2) {
      say("pick two candidates to compare (x or the compare box on a card)", true);
      return;
    }
    var items = picks.map(function (id) { return itemOf(cardById(id)); });
    openViewer(items, "compare " + picks.join(" ↔ "), null, 0);
  }

  // --- density ------------------------------------------------------------------------------------------------

  function setDensity(value, remember) {
    if (["s", "m", "l"].indexOf(value) < 0) value = "m";
    document.documentElement.setAttribute("data-density", value);
    Array.prototype.forEach.call(document.querySelectorAll("button[data-density]"), function (button) {
      button.setAttribute("aria-pressed", button.getAttribute("data-density") === value ? "true" : "false");
    });
    if (remember) {
      try { window.localStorage.setItem(DENSITY_KEY, value); } catch (e) { /* storage off: this page only */ }
    }
  }

  var stored = null;
  try { stored = window.localStorage.getItem(DENSITY_KEY); } catch (e) { stored = null; }
  setDensity(stored || "m", false);

  // --- events -------------------------------------------------------------------------------------------------

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches("form.decide")) {
      event.preventDefault();
      var submitter = event.submitter;
      decide(form.closest(".card"), submitter && submitter.value === "reject" ? "reject" : "approve");
    } else if (form.matches("form.undo")) {
      event.preventDefault();
      undo({ id: form.closest(".card").getAttribute("data-candidate"), action: form.getAttribute("action") });
    } else if (form.matches("form.bulk")) {
      event.preventDefault();
      post(form.getAttribute("action"), {}).then(function (data) {
        say("approved " + data.approved.length + " candidates" + (data.errors.length ? "; " + data.errors.join("; ") : ""), data.errors.length > 0);
        window.setTimeout(function () { window.location.reload(); }, 600);
      }).catch(function (error) { say(error.message, true); });
    } else if (form.matches("form.finalize")) {
      event.preventDefault();
      finalize(form);
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!target.closest) return;
    if (target.closest("button[data-density]")) setDensity(target.closest("button[data-density]").getAttribute("data-density"), true);
    else if (target.closest("button.compare-open")) compare();
    else if (target.closest("button.undo-last")) undo(undoStack.pop());
    else if (target.closest(".viewer-close")) closeViewer();
    else if (target.closest(".viewer-prev")) viewerStep(-1);
    else if (target.closest(".viewer-next")) viewerStep(1);
    else if (target.closest(".viewer .pane img")) target.closest(".pane").classList.toggle("actual");
    else if (target.matches("img.full")) viewDetail();
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("input.compare-pick")) pick(target.closest(".card"), target.checked);
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    if (viewer && !viewer.hidden) {
      if (event.key === "Escape") closeViewer();
      else if (event.key === "ArrowRight") viewerStep(1);
      else if (event.key === "ArrowLeft") viewerStep(-1);
      else return;
      event.preventDefault();
      return;
    }
    var target = event.target;
    var typing = target && target.tagName === "INPUT" && !/^(checkbox|radio|button|submit)$/.test(target.type);
    if (target && (target.isContentEditable || typing || /^(TEXTAREA|SELECT)$/.test(target.tagName))) return;
    var card = focusedCard();
    if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      move(event.key === "j" ? 1 : -1);
    } else if ((event.key === "a" || event.key === "r") && card) {
      event.preventDefault();
      decide(card, event.key === "a" ? "approve" : "reject");
    } else if (event.key === "u") {
      event.preventDefault();
      undo(undoStack.pop());
    } else if (event.key === "x" && card && card.querySelector("input.compare-pick")) {
      event.preventDefault();
      pick(card, picks.indexOf(card.getAttribute("data-candidate")) < 0);
    } else if (event.key === "c" && summaryBox) {
      event.preventDefault();
      compare();
    } else if ((event.key === "Enter" || event.key === "v") && card && card === target && card.matches("li.card")) {
      event.preventDefault();
      viewCard(card);
    } else if (event.key === "v" && !summaryBox) {
      event.preventDefault();
      viewDetail();
    } else if ((event.key === "ArrowRight" || event.key === "ArrowLeft") && document.querySelector("nav.pager")) {
      var link = document.querySelector(event.key === "ArrowRight" ? "nav.pager a.next" : "nav.pager a.prev");
      if (link) {
        event.preventDefault();
        window.location.href = link.getAttribute("href");
      }
    }
  });

  updateTools();
  if (document.querySelector("nav.pager") && window.location.hash === "#view") viewDetail();
  if (publishBox && publishBox.getAttribute("data-running") === "true") poll();
})();
