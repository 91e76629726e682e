// Typeset the math that pymdownx.arithmatex left in .arithmatex elements, with the KaTeX this
// site ships (docs/vendor/katex). mkdocs-material swaps pages without reloading (document$),
// so typeset on every page it shows.
function renderMath() {
  for (const element of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: true,
    });
  }
}

if (typeof document$ !== "undefined") {
  document$.subscribe(renderMath);
} else {
  document.addEventListener("DOMContentLoaded", renderMath);
}
