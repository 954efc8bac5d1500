"""Checks for the learners' exercises, one module per lab (``ftlab.checks.lab01`` ...).

A check cell in a notebook calls the lab's check function on the learner's
function; the function compares it with an independent reference (transformers,
peft, trl, tokenizers, bitsandbytes, torch) on inputs the learner did not
choose and raises ``AssertionError`` with a hint when it differs. The unit tests
(``tests/test_exercise_checks_*.py``) call the same functions on plausible wrong
answers and assert that each is rejected.
"""
