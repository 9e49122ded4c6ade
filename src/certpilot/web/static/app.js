// Small progressive enhancement; every page works without it.
(function () {
  "use strict";
  // New certificate: show the dynamic-parameter inputs of the picked profile only.
  var picker = document.getElementById("profile");
  function showProfileParams() {
    if (!picker) return;
    document.querySelectorAll("fieldset[data-profile]").forEach(function (fs) {
      var on = fs.getAttribute("data-profile") === picker.value;
      fs.hidden = !on;
      fs.disabled = !on;
    });
  }
  if (picker) { picker.addEventListener("change", showProfileParams); showProfileParams(); }

  // Profile form: add and remove parameter rows.
  var table = document.getElementById("param-rows");
  var add = document.getElementById("add-param");
  if (table && add) {
    add.hidden = false;
    add.addEventListener("click", function () {
      var rows = table.querySelectorAll("tr[data-row]");
      var last = rows[rows.length - 1];
      var index = parseInt(document.getElementById("param-count").value, 10);
      var row = last.cloneNode(true);
      row.querySelectorAll("input").forEach(function (input) {
        input.name = input.name.replace(/_\d+$/, "_" + index);
        input.id = input.id.replace(/_\d+$/, "_" + index);
        if (input.type === "checkbox") { input.checked = false; } else { input.value = ""; input.placeholder = ""; }
        if (input.type === "password") { input.type = "text"; }
      });
      var remove = row.querySelector("button[data-remove]");
      if (remove) remove.setAttribute("aria-label", "Remove parameter row " + (index + 1));
      row.querySelectorAll("label").forEach(function (label) {
        var f = label.getAttribute("for"); if (f) label.setAttribute("for", f.replace(/_\d+$/, "_" + index));
      });
      last.parentNode.appendChild(row);
      document.getElementById("param-count").value = String(index + 1);
      row.querySelector("input").focus();
    });
  }
  if (table) {
    table.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-remove]");
      if (!button) return;
      event.preventDefault();
      var row = button.closest("tr");
      row.querySelectorAll("input").forEach(function (input) {
        if (input.type === "checkbox") input.checked = false; else input.value = "";
      });
      if (table.querySelectorAll("tr[data-row]").length > 1) row.remove();
    });
  }
  // Sensitive checkbox: hide what is typed into the value.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("input[data-sensitive]")) return;
    var value = box.closest("tr").querySelector("input[data-value]");
    if (value) value.type = box.checked ? "password" : "text";
  });
  // Confirmation for destructive or audited actions.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
})();
