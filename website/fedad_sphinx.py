"""How the API reference reads the package's docstrings.

Google-style sections (``Args:``, ``Returns:``) of functions, classes and modules are rendered by Napoleon.
Attributes and module data are left alone: their doc comments are prose (``#: The anomaly types ...: ...``),
which Napoleon would split at the first colon into a type and a description.

Two kinds of Python references that Sphinx leaves unresolved, although they name one object exactly, are
resolved:

- A role whose target a docstring wraps over two lines (``:func:`fedad_tutorial.` + newline +
  ``training.train_local```): docutils keeps the line break inside the target. The target without whitespace
  is looked up again.
- A target naming a documented object by its last components (``:meth:`FeatureStats.of``` in a module that
  imports ``FeatureStats``): resolved when exactly one documented object ends with it, as Sphinx itself does
  for a target written with a leading dot. An ambiguous or unknown target stays a warning, so the strict build
  still fails on it.

A reference to a private helper (``:func:`_npz_header```) is shown as code without a link: private helpers are
not in the reference.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.napoleon import Config, GoogleDocstring

#: The kinds of objects whose docstrings carry Google-style sections.
_SECTIONED = {"module", "class", "exception", "function", "method"}


def _google_sections(app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]) -> None:
    if what in _SECTIONED:
        lines[:] = GoogleDocstring(lines, Config(napoleon_use_rtype=False), app, what, name, obj).lines()


def _resolve(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element):
    if node.get("refdomain") != "py":
        return None
    target = "".join(node["reftarget"].split())
    if target.rsplit(".", 1)[-1].startswith("_"):
        return contnode
    domain = env.get_domain("py")
    if target != node["reftarget"]:
        retry = node.deepcopy()
        retry["reftarget"] = target
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, retry, contnode)
        if found is not None:
            return found
    matches = [name for name in domain.objects if name == target or name.endswith("." + target)]
    if len(matches) != 1:
        return None
    retry = node.deepcopy()
    retry["reftarget"] = matches[0]
    found = domain.resolve_any_xref(env, node["refdoc"], app.builder, matches[0], retry, contnode)
    return found[0][1] if found else None


def setup(app: Sphinx) -> dict[str, bool]:
    app.connect("autodoc-process-docstring", _google_sections)
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
