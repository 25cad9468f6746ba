// Progressive enhancement only: every page works without this file.
document.addEventListener("click", function (event) {
  var target = event.target.closest("[data-print],[data-copy],[data-confirm]");
  if (!target) return;
  if (target.hasAttribute("data-print")) {
    window.print();
  } else if (target.hasAttribute("data-copy")) {
    var source = document.querySelector(target.getAttribute("data-copy"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        target.textContent = "Copied";
      });
    }
  } else if (target.hasAttribute("data-confirm")) {
    if (!window.confirm(target.getAttribute("data-confirm"))) event.preventDefault();
  }
});
