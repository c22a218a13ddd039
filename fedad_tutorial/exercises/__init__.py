"""Self-checking exercises for the course notebooks.

Each notebook's exercises live in a module of this package (``exercises.nb01`` for notebook 01,
...). A check calls the learner's function on *fresh* data and compares its behaviour with the
package's reference implementation; it never compares against a stored answer. Every check
prints one line and returns an :class:`~fedad_tutorial.exercises.checking.Outcome`:

- the placeholder (``raise NotImplementedError``) gives "not implemented yet", not an error,
  so a learner's notebook always runs top to bottom;
- a wrong answer gives a hint about what differs;
- a right answer gives "Correct".

A check never changes the notebook's random state (PyTorch's, NumPy's global or Python's): the cells
after it draw the same numbers whether the check ran or not.
"""

from fedad_tutorial.exercises.checking import Outcome, exercise

__all__ = ["Outcome", "exercise"]
