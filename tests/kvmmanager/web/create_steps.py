"""Moving through the create-VM page's steps in a browser test: a field can be filled only
on the step that shows it (create.js shows one step at a time)."""

from __future__ import annotations

from typing import Any

STEPS = 4


def step(page: Any, n: int) -> None:
    """Open step `n` through the step list at the top of the form."""
    page.click(f"form#new-vm .steps [data-step-go='{n}']")


def submit(page: Any, double: bool = False) -> None:
    """Open the review step and press Create VM (twice quickly with `double`)."""
    step(page, STEPS)
    button = "form#new-vm button.create"
    page.dblclick(button) if double else page.click(button)
