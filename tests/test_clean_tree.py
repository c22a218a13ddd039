"""Running the suite must not change the checkout: generated files go to temporary or ignored folders.

Collected last (see the root ``conftest.py``), so it sees what every test and notebook left behind.
"""

import pytest


def test_the_suite_leaves_the_checkout_unchanged(checkout_changes):
    changed = checkout_changes()
    if changed is None:
        pytest.skip("not a git checkout")
    assert not changed, "the test run changed the checkout (git status --porcelain):\n" + "\n".join(changed)
