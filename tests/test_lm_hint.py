"""A missing language model's hint offers a hub download only for a hub name, never for a local path."""

from __future__ import annotations

from pathlib import Path

import pytest

from learec.env.lm import load_causal_lm
from learec.errors import UserError


def test_a_missing_local_model_is_not_offered_for_download(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "smollm2-135m-instruct"
    with pytest.raises(UserError) as err:
        load_causal_lm(missing)
    assert f"downloading '{missing}'" not in str(err.value) and "learec env fetch" in str(err.value)
    assert "does not exist" in str(err.value)


def test_a_missing_hub_name_is_offered_for_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LEAREC_ALLOW_DOWNLOADS", raising=False)
    with pytest.raises(UserError) as err:
        load_causal_lm("no-such-org/no-such-model")
    assert "LEAREC_ALLOW_DOWNLOADS=1 allows downloading 'no-such-org/no-such-model'" in str(err.value)
