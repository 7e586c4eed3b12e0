"""check_hub: an unreachable Hub fails at once, without the Hub client's retries."""

import pytest

from skvlm.models import ModelNotFoundError
from skvlm.models._loading import check_hub, not_found

huggingface_hub = pytest.importorskip("huggingface_hub")
constants = pytest.importorskip("huggingface_hub.constants")


class _Unreachable:
    """A Hub session whose every request fails as a missing network does."""

    def __init__(self):
        self.requests = []

    def head(self, url, **kwargs):
        self.requests.append((url, kwargs))
        raise OSError("[Errno -2] Name or service not known")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache, online mode, and a session that cannot connect."""
    session = _Unreachable()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: session)
    return session


def test_an_unreachable_hub_fails_with_the_offline_fix(hub):
    with pytest.raises(ModelNotFoundError) as info:
        check_hub("org/model")
    message = str(info.value)
    assert "'org/model'" in message and "cannot be reached" in message
    assert "`hf download <id>`" in message and "HF_HUB_OFFLINE=1" in message
    assert "huggingface-cli" not in message
    assert len(hub.requests) == 1  # one request, no retry
    url, kwargs = hub.requests[0]
    assert url == f"{constants.ENDPOINT}/api/models/org/model"
    assert kwargs["timeout"] <= 5


def test_a_cached_model_offline_mode_and_non_ids_ask_nothing(
    hub, tmp_path, monkeypatch
):
    repo = tmp_path / "models--org--cached"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    check_hub("org/cached")  # transformers loads it from the cache
    check_hub("not a valid / repo id")  # transformers' own error says why
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    check_hub("org/model")
    assert hub.requests == []


def test_the_not_found_message_names_the_installed_hub_command():
    message = str(not_found("org/model", OSError("gated")))
    assert "`hf download <id>`" in message and "huggingface-cli" not in message
    assert "HF_HUB_OFFLINE=1" in message
