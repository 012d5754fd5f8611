// OSOS UI: the "Read now" button of the meter page (AMR-9, HES-13) and the alarm buttons. No framework, no build
// step.
// Posts a read order through the Web API with the session cookie and the CSRF header, polls the order
// until it finishes, then reloads the register grid and the raw/parsed list from the server.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  async function refreshData() {
    var box = document.getElementById("meter-data");
    if (!box) { return; }
    var res = await fetch(box.getAttribute("data-src"), { credentials: "same-origin" });
    if (res.ok) { box.innerHTML = await res.text(); }
  }

  async function readNow(button) {
    var status = document.getElementById("order-status");
    var msg = function (name) { return button.getAttribute("data-msg-" + name) || name; };
    var show = function (text, cls) { status.textContent = text; status.className = cls || ""; };
    var deadline = Date.now() + 1000 * Number(button.getAttribute("data-timeout-s") || "90");
    button.disabled = true;
    show(msg("sending"));
    try {
      var res = await fetch("/api/v1/orders", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
        body: JSON.stringify({ kind: "read", meter: Number(button.getAttribute("data-meter")) })
      });
      var body = await res.json().catch(function () { return {}; });
      if (res.status !== 201) {
        show(msg("error") + " " + (typeof body.detail === "string" ? body.detail : res.status), "error");
        return;
      }
      var orderId = body.id;
      while (Date.now() < deadline) {
        var poll = await fetch("/api/v1/orders/" + orderId, { credentials: "same-origin" });
        if (!poll.ok) { show(msg("error") + " " + poll.status, "error"); return; }
        var order = await poll.json();
        if (order.status === "succeeded") {
          show(msg("succeeded"), "ok");
          await refreshData();
          return;
        }
        if (order.status === "failed" || order.status === "expired" || order.status === "cancelled") {
          show(msg("failed") + (order.error ? " " + order.error : ""), "error");
          return;
        }
        show(msg(order.status) + " (#" + orderId + ")");
        await sleep(1000);
      }
      show(msg("timeout"), "error");
    } catch (err) {
      show(msg("error") + " " + err, "error");
    } finally {
      button.disabled = false;
    }
  }

  // Alarms page: acknowledge / clear through the Web API (HES-11, HES-28), then show the new state.
  async function alarmAction(button) {
    var status = document.getElementById("alarm-status");
    button.disabled = true;
    var res = await fetch("/api/v1/alarms/" + button.getAttribute("data-alarm") + "/" +
                          button.getAttribute("data-action"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken() }
    });
    if (res.ok) { window.location.reload(); return; }
    var body = await res.json().catch(function () { return {}; });
    if (status) { status.textContent = typeof body.detail === "string" ? body.detail : String(res.status); }
    button.disabled = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("read-now");
    if (button) {
      button.addEventListener("click", function () { readNow(button); });
    }
    document.querySelectorAll("button[data-alarm]").forEach(function (b) {
      b.addEventListener("click", function () { alarmAction(b); });
    });
  });
})();
