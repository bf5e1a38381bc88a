"""Each codec owns whether the DALI backend can read it: a form in ``lossyload.dali.graphs.FORMS``, or its
reason in ``no_dali_form``, which the backend's refusal quotes."""

from __future__ import annotations

import pytest

from lossyload.codecs import codec_class, list_codecs
from lossyload.dali import graphs
from lossyload.errors import DaliUnsupportedError


@pytest.mark.parametrize("name", list_codecs())
def test_every_codec_has_a_dali_form_or_says_why_not(name: str) -> None:
    cls = codec_class(name)
    if cls.no_dali_form is None:
        assert name in graphs.FORMS, name
        return
    assert name not in graphs.FORMS and len(cls.no_dali_form) > 20, name
    with pytest.raises(DaliUnsupportedError, match=f"codec '{name}' has no DALI form: {cls.no_dali_form[:30]}"):
        graphs.check(cls(), [])


def test_the_forms_are_the_codecs_that_claim_one() -> None:
    assert sorted(graphs.FORMS) == sorted(n for n in list_codecs() if codec_class(n).no_dali_form is None)
