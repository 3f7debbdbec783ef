"""README's promises: two set-up commands near the top, a parameter table that matches config.py."""
from pathlib import Path

from loop_ros.core.params_file import markdown_parameter_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_parameter_table_is_generated_from_the_dataclasses():
    text = README.read_text()
    table = text.split("<!-- params:begin -->\n")[1].split("\n<!-- params:end -->")[0]
    assert table == markdown_parameter_table(), "regenerate README's table from params_file.markdown_parameter_table()"


def test_readme_starts_with_the_two_make_commands():
    head = README.read_text().split("## ")[0]
    assert "make run" in head and "make test" in head
