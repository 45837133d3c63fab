"""The examples in the curvature and testing docstrings run."""

import doctest

import pytest

import sgdlab.curvature.flat
import sgdlab.testing.cases


@pytest.mark.parametrize("module", [sgdlab.curvature.flat, sgdlab.testing.cases])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
