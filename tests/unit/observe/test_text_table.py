import pytest

from trainer.observe.text_table import aligned


@pytest.mark.parametrize("rows, right, indent, lines", [
    ([("loss", "0.1234"), ("accuracy", "0.9000")], (), "  ", ["  loss      0.1234", "  accuracy  0.9000"]),
    ([("layer", "parameters"), ("head", "1,290")], {1}, "", ["layer  parameters", "head        1,290"]),
    ([("", "a", "bb"), ("x", "10", "2")], {1, 2}, "  ", ["      a  bb", "  x  10   2"]),
    ([("photo.png", "cat  (cat 0.9)"), ("p.png", "dog")], (), "", ["photo.png  cat  (cat 0.9)", "p.png      dog"]),
], ids=["metrics", "right-aligned numbers", "matrix", "free text last"])
def test_columns_line_up_two_spaces_apart_and_no_line_ends_in_spaces(rows, right, indent, lines):
    assert aligned(rows, right=right, indent=indent) == lines
