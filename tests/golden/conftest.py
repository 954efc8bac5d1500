"""Golden submissions are graded by tests/test_grade_golden.py, never executed by nbval (some hang on purpose)."""


def pytest_ignore_collect(collection_path, config):
    return collection_path.suffix == ".ipynb" or collection_path.name == "make_golden.py"
