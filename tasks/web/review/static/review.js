// AssetMint review: keyboard review on the contact sheet, decisions and finalize via fetch. No inline scripts
// (the Content-Security-Policy forbids them); every text from the server is set with textContent, never as HTML.
(function () {
  "use strict";

  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var statusBox = document.getElementById("status");

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

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll(".card"));
  }

  function focusedCard() {
    var element = document.activeElement;
    return element && element.closest ? element.closest(".card") : null;
  }

  function move(step) {
    var list = cards();
    if (!list.length) return;
    var here = list.indexOf(focusedCard());
    var next = here < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, here + step));
    list[next].focus();
    list[next].scrollIntoView({ block: "nearest" });
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

  function decide(card, decision) {
    var form = card.querySelector("form.decide");
    if (!form) return;
    var body = { decision: decision, comment: field(form, "comment") };
    var reason = field(form, "override_reason");
    if (reason) body.override_reason = reason;
    card.setAttribute("aria-busy", "true");
    post(form.getAttribute("action"), body).then(function (data) {
      setState(card, data.state);
      say(data.candidate_id + ": " + data.state, false);
    }).catch(function (error) {
      say(error.message, true);
    }).then(function () {
      card.removeAttribute("aria-busy");
    });
  }

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

  function poll(box) {
    fetch(box.getAttribute("data-status-url"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        renderPublish(box, data);
        if (data.running) window.setTimeout(function () { poll(box); }, 700);
        else if (data.finished_at) say("finalize done: " + data.finalized + " finalized, " + data.finalize_failed + " failed", !!data.error);
      })
      .catch(function (error) { say(error.message, true); });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches("form.decide")) {
      event.preventDefault();
      var submitter = event.submitter;
      decide(form.closest(".card"), submitter && submitter.value === "reject" ? "reject" : "approve");
    } else if (form.matches("form.bulk")) {
      event.preventDefault();
      post(form.getAttribute("action"), {}).then(function (data) {
        say("approved " + data.approved.length + " candidates" + (data.errors.length ? "; " + data.errors.join("; ") : ""), data.errors.length > 0);
        window.setTimeout(function () { window.location.reload(); }, 600);
      }).catch(function (error) { say(error.message, true); });
    } else if (form.matches("form.finalize")) {
      event.preventDefault();
      var box = form.closest(".publish");
      post(form.getAttribute("action"), {}).then(function (data) {
        renderPublish(box, data);
        poll(box);
      }).catch(function (error) { say(error.message, true); });
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      move(event.key === "j" ? 1 : -1);
    } else if (event.key === "a" || event.key === "r") {
      var card = focusedCard();
      if (!card) return;
      event.preventDefault();
      decide(card, event.key === "a" ? "approve" : "reject");
    }
  });

  var publishBox = document.getElementById("publish");
  if (publishBox && publishBox.getAttribute("data-running") === "true") poll(publishBox);
})();
