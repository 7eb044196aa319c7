"""Full fine-tunes (issue 20, part 1): real transformers models fine-tuned for a few steps, saved by
``save_pretrained`` (sharded, with a tokenizer and a generation config), committed on their base."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import stored_f32, tiny_vit
from dithub import Repo
from dithub.errors import BadInput, IncompatibleAdapters


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def save_tokenizer(out: Path) -> None:
    """A word-level tokenizer made with the tokenizers library (nothing downloaded), saved by transformers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", *(f"w{i}" for i in range(62))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(out)


def fine_tune(model, steps: int, batch, only: tuple[str, ...] = ()):
    """A few SGD steps on one batch (``only``: train just the parameters whose names contain one of these)."""
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(not only or any(o in n for o in only))
        params += [p] if p.requires_grad else []
    opt = torch.optim.SGD(params, lr=0.1)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    return model.eval()


@dataclass
class Llama:
    base: Path
    ft: Path
    ft_head: Path
    ft2: Path
    ids: torch.Tensor


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Llama:
    root = tmp_path_factory.mktemp("llama")
    torch.manual_seed(1)
    ids = torch.randint(2, 64, (4, 12))
    batch = {"input_ids": ids, "labels": ids}
    tiny_llama().save_pretrained(root / "base", max_shard_size="40KB")
    save_tokenizer(root / "base")
    fine_tune(tiny_llama(), 3, batch).save_pretrained(root / "ft", max_shard_size="40KB")
    save_tokenizer(root / "ft")
    fine_tune(tiny_llama(), 3, batch, only=("lm_head",)).save_pretrained(root / "ft_head", max_shard_size="40KB")
    other = torch.randint(2, 64, (4, 12))
    fine_tune(tiny_llama(), 3, {"input_ids": other, "labels": other}).save_pretrained(root / "ft2", max_shard_size="40KB")
    return Llama(root / "base", root / "ft", root / "ft_head", root / "ft2", ids)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def committed_files(folder: Path) -> dict[str, bytes]:
    """The files of a checked-out fine-tune but the model card dithub adds (none was committed): that
    card says what the model is, as the Hub reads it."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md").data
    assert (card.library_name, card.base_model_relation) == ("transformers", "finetune")
    return {name: data for name, data in files_of(folder).items() if name != "README.md"}


def test_a_fine_tune_commits_on_its_base_and_comes_back_byte_for_byte(llama, tmp_path):
    from transformers import LlamaForCausalLM

    original = files_of(llama.ft)
    assert "model.safetensors.index.json" in original and "generation_config.json" in original
    assert "tokenizer.json" in original and sum(n.endswith(".safetensors") for n in original) >= 2  # really sharded
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("llama", llama.base)
    res = repo.commit(llama.ft, "fine-tuned", branch="ft/a", base="llama")
    tree = repo.tree_of("ft/a")
    assert tree.kind == "full" and repo.show("ft/a").base == "llama"
    out = repo.export("ft/a", tmp_path / "out")
    assert committed_files(out) == original  # every shard, the index, config, generation config, tokenizer files
    checked = tmp_path / "checked"
    from dithub.cli import main
    assert main(["-C", str(tmp_path / "repo"), "checkout", "ft/a", "-o", str(checked)]) == 0
    assert committed_files(checked) == original
    with torch.no_grad():
        expected = LlamaForCausalLM.from_pretrained(llama.ft)(input_ids=llama.ids).logits
        got = LlamaForCausalLM.from_pretrained(out)(input_ids=llama.ids).logits
    assert torch.equal(expected, got)
    assert res.total_bytes == sum(e.nbytes for e in tree.tensors.values())
    assert repo.fsck().ok


def test_a_fine_tune_costs_the_tensors_it_changed(llama, tmp_path):
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("llama", llama.base)
    res = repo.commit(llama.ft_head, "head only", branch="ft/head", base="llama")
    tree, base = repo.tree_of("ft/head"), repo.tree_of("llama")
    changed = [n for n, e in tree.tensors.items() if e.id != base.tensors[n].id]
    assert changed == ["lm_head.weight"]  # the others dedup against the base, by content
    head = tree.tensors["lm_head.weight"].nbytes
    assert head <= res.new_bytes < head + 16_000  # the head, and the small objects: headers, index, config, tree, commit
    assert res.new_bytes < 0.25 * res.total_bytes


def test_a_model_directory_needs_the_base_it_was_fine_tuned_from(llama, tmp_path, cli):
    repo = Repo.init(tmp_path / "repo")
    with pytest.raises(BadInput, match="pass --base NAME"):
        repo.commit(llama.ft, "no base", branch="ft/a")
    repo.base_add("vit", _vit_dir(tmp_path))
    with pytest.raises(IncompatibleAdapters, match="no matching tensor in the base"):
        repo.commit(llama.ft, "other base", branch="ft/a", base="vit")
    assert repo.branches() == {}  # nothing committed
    res = cli(["-C", str(tmp_path / "repo"), "commit", str(llama.ft), "-m", "x", "-b", "ft/a"])
    assert res.code == BadInput.exit_code and "--base" in res.err


def _vit_dir(root: Path) -> Path:
    tiny_vit().save_pretrained(root / "vit")
    return root / "vit"


def test_a_vit_fine_tune_round_trips_and_travels_through_a_remote(tmp_path):
    from transformers import ViTForImageClassification

    from dithub.ops.sync import push, remote_add

    torch.manual_seed(4)
    pixels, labels = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    fine_tune(tiny_vit(), 3, {"pixel_values": pixels, "labels": labels}).save_pretrained(tmp_path / "ft")
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", _vit_dir(tmp_path))
    repo.commit(tmp_path / "ft", "vit fine-tune", branch="ft/vit", base="vit")
    remote_add(repo, "origin", str(tmp_path / "remote"))
    push(repo, "origin", ["ft/vit"])
    clone, _ = Repo.clone(str(tmp_path / "remote"), tmp_path / "clone")
    out = clone.export("ft/vit", tmp_path / "out")
    assert committed_files(out) == files_of(tmp_path / "ft")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ViTForImageClassification"]
    with torch.no_grad():
        assert torch.equal(ViTForImageClassification.from_pretrained(out)(pixel_values=pixels).logits,
                           ViTForImageClassification.from_pretrained(tmp_path / "ft")(pixel_values=pixels).logits)
    assert clone.fsck().ok


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for p in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(p)).items()}


def test_full_fine_tunes_merge_as_task_vectors_against_their_base(llama, tmp_path):
    """Every full-space method sees τ = θ − θ_base, computed on the fly against the recorded base (as
    mergekit does); the result is a task vector on that base, exported as a full model by --merged."""
    from transformers import LlamaForCausalLM

    from reference import ties_merging

    repo = Repo.init(tmp_path / "repo")
    repo.base_add("llama", llama.base)
    repo.commit(llama.ft, "a", branch="ft/a", base="llama")
    repo.commit(llama.ft2, "b", branch="ft/b", base="llama")
    repo.merge(["ft/a", "ft/b"], "task_arithmetic", {"alpha": 0.5}, into="ta")
    repo.merge(["ft/a", "ft/b"], "ties", {"density": 0.2}, into="ties")
    assert repo.tree_of("ta").kind == "task_vector" and repo.show("ta").base == "llama"
    base, a, b = weights_of(llama.base), weights_of(llama.ft), weights_of(llama.ft2)
    taus = {n: [a[n].float() - base[n].float(), b[n].float() - base[n].float()] for n in base}
    assert set(repo.tree_of("ta").tensors) == set(base)
    for n, (ta, tb) in taus.items():
        assert torch.equal(stored_f32(repo, "ta", n, base[n].shape), (ta + tb) * 0.5)
        torch.testing.assert_close(stored_f32(repo, "ties", n, base[n].shape), ties_merging.ties([ta, tb], 0.2), rtol=1e-6, atol=0)
    repo.create_branch("undo", "ta")
    repo.revert("ft/b", from_merge="ta", branch="undo")  # exact: the merge replayed without ft/b
    repo.create_branch("neg", "ta")
    repo.revert("ft/b", from_merge="ta", method="negation", branch="neg")  # the merge minus α·τ_b
    for n, (ta, _tb) in taus.items():
        assert torch.equal(stored_f32(repo, "undo", n, base[n].shape), ta * 0.5)
        torch.testing.assert_close(stored_f32(repo, "neg", n, base[n].shape), ta * 0.5, rtol=0, atol=1e-6)
    out = repo.export_merged("ta", None, tmp_path / "merged")
    expected = tiny_llama()
    expected.load_state_dict({n: base[n] + (ta + tb) * 0.5 for n, (ta, tb) in taus.items()})
    with torch.no_grad():
        torch.testing.assert_close(LlamaForCausalLM.from_pretrained(out)(input_ids=llama.ids).logits,
                                   expected(input_ids=llama.ids).logits, rtol=0, atol=0)
    with pytest.raises(BadInput, match="full-space ones .* fine-tunes"):
        repo.merge(["ft/a", "ft/b"], "concat", into="nope")
    repo.base_add("llama-ft", llama.ft)  # a checkpoint registered as a base records none
    with pytest.raises(IncompatibleAdapters, match="records no base"):
        repo.merge(["llama", "llama-ft"], "task_arithmetic", into="nope")


def test_a_fine_tunes_integer_tensors_must_be_its_bases(tmp_path):
    """Integer tensors (position ids, masks) have no deltas: equal to the base's they are left out of
    the merge (and come back from the base on export --merged); changed, the merge is refused."""
    from safetensors.torch import load_file, save_file

    def model_dir(name: str, w: torch.Tensor, pos: torch.Tensor) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text('{"model_type": "toy"}')
        save_file({"w": w, "pos": pos}, str(tmp_path / name / "model.safetensors"), metadata={"format": "pt"})
        return tmp_path / name

    torch.manual_seed(0)
    w0, pos = torch.randn(3, 4), torch.arange(4)
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("toy", model_dir("base", w0, pos))
    repo.commit(model_dir("a", w0 + 1, pos), "a", branch="a", base="toy")
    repo.commit(model_dir("b", w0 - 2, pos), "b", branch="b", base="toy")
    repo.commit(model_dir("c", w0 + 3, pos + 1), "c", branch="c", base="toy")
    repo.merge(["a", "b"], "task_arithmetic", {"alpha": 1.0}, into="m")
    assert set(repo.tree_of("m").tensors) == {"w"}
    merged = load_file(str(repo.export_merged("m", None, tmp_path / "out") / "model.safetensors"))
    assert torch.equal(merged["pos"], pos) and torch.equal(merged["w"], w0 + ((w0 + 1 - w0) + (w0 - 2 - w0)))
    with pytest.raises(IncompatibleAdapters, match="'pos'"):
        repo.merge(["a", "c"], "task_arithmetic", into="nope")


def test_extract_makes_a_peft_lora_of_a_fine_tune_with_its_errors(llama, tmp_path, cli):
    """``extract`` (as mergekit's LoRA extraction): per linear layer, the top-r SVD of ΔW = θ − θ_base as
    B = U_r Σ_r, A = V_rᵀ at scale 1; the reported error is √(Σ_{i>r} σ_i² / Σ σ_i²), computed here
    from the singular values; peft loads the directory, and merging it adds exactly B A."""
    from peft import PeftModel

    repo = Repo.init(tmp_path / "repo")
    repo.base_add("llama", llama.base)
    repo.commit(llama.ft, "ft", branch="ft/a", base="llama")
    base, ft = weights_of(llama.base), weights_of(llama.ft)
    res = repo.extract("ft/a", 2, tmp_path / "lora")
    linear = [n for n in base if n.endswith("proj.weight") or n == "lm_head.weight"]
    assert sorted(res.errors) == sorted(n.removesuffix(".weight") for n in linear)
    total_sq = tail_sq = 0.0
    for n in linear:
        s = torch.linalg.svdvals(ft[n].double() - base[n].double())
        total_sq, tail_sq = total_sq + float(s.square().sum()), tail_sq + float(s[2:].square().sum())
        assert res.errors[n.removesuffix(".weight")] == pytest.approx(float((s[2:].square().sum() / s.square().sum()).sqrt()), rel=1e-9)
    assert res.overall == pytest.approx((tail_sq / total_sq) ** 0.5, rel=1e-9)
    assert "model.embed_tokens.weight" in res.skipped and "model.norm.weight" in res.skipped  # changed, not linear
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 2 and config["base_model_name_or_path"] == "llama"
    merged = PeftModel.from_pretrained(tiny_llama(), tmp_path / "lora").merge_and_unload().state_dict()
    for n in linear:
        u, s, vh = torch.linalg.svd(ft[n].double() - base[n].double(), full_matrices=False)
        torch.testing.assert_close(merged[n].double() - base[n].double(), (u[:, :2] * s[:2]) @ vh[:2], rtol=0, atol=1e-6)
    full = repo.extract("ft/a", 64, tmp_path / "full")  # every layer at full rank: exact
    assert max(full.errors.values()) < 1e-7 and json.loads((tmp_path / "full" / "adapter_config.json").read_text())["rank_pattern"]
    repo.commit(tmp_path / "full", "extracted", branch="lora/a", base="llama")  # the directory commits as any peft adapter
    res = cli(["-C", str(tmp_path / "repo"), "extract", "ft/a", "--rank", "2", "-o", str(tmp_path / "cli"), "--json"])
    assert res.code == 0 and json.loads(res.out)["overall"] == pytest.approx((tail_sq / total_sq) ** 0.5, rel=1e-9)
    with pytest.raises(BadInput, match="rank 1 or more"):
        repo.extract("ft/a", 0, tmp_path / "zero")


def test_export_merged_shards_like_save_pretrained_with_the_base_tokenizer(llama, tmp_path, cli):
    """Issue 20, part 4: ``export --merged --max-shard-size`` writes shards and an index as
    ``save_pretrained`` does, the base's tokenizer and generation config, and a card; ``--merge-into``
    takes a model directory or a dithub revision, and both give the same weights."""
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoTokenizer, LlamaForCausalLM

    from conftest import lora_adapter

    lora_adapter(tiny_llama(), tmp_path / "lora", seed=5, targets=("q_proj", "v_proj", "down_proj"))
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("llama", llama.base)
    repo.commit(tmp_path / "lora", "a lora", branch="lora/a", base="llama")
    run = lambda *args: cli(["-C", str(tmp_path / "repo"), "export", "lora/a", *args])  # noqa: E731
    assert run("--merged", "--max-shard-size", "20KB", "-o", str(tmp_path / "merged")).code == 0
    out = tmp_path / "merged"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) >= 3 and shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert set(index["weight_map"].values()) == set(shards)
    sizes = {}
    for name in shards:
        with safe_open(str(out / name), "pt") as f:
            assert f.metadata() == {"format": "pt"}
            sizes[name] = sum(f.get_tensor(k).nbytes for k in f.keys())
            one_tensor = len(list(f.keys())) == 1
        assert sizes[name] <= 20_000 or one_tensor
    assert index["metadata"]["total_size"] == sum(sizes.values())
    for side in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        assert (out / side).read_bytes() == (llama.base / side).read_bytes(), side
    assert AutoTokenizer.from_pretrained(out)("w1 w2")["input_ids"] == AutoTokenizer.from_pretrained(llama.base)("w1 w2")["input_ids"]
    card = ModelCard.load(out / "README.md").data
    assert (card.library_name, card.base_model, card.base_model_relation) == ("transformers", "llama", "finetune")
    expected = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(llama.base), tmp_path / "lora").merge_and_unload()
    ours = LlamaForCausalLM.from_pretrained(out)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in ours.state_dict().items())
    weights = lambda folder: {n: (folder / n).read_bytes() for n in shards}  # noqa: E731
    for i, into in enumerate((str(llama.base), "llama", repo.resolve("llama"))):  # a path, a base name, a commit id
        assert run("--merge-into", into, "--max-shard-size", "20KB", "-o", str(tmp_path / f"into{i}")).code == 0
        assert weights(tmp_path / f"into{i}") == weights(out), into
    bad = run("--merge-into", "nowhere/at-all", "-o", str(tmp_path / "bad"))
    assert bad.code != 0 and "is neither a path, a revision nor a hub id" in bad.err and not (tmp_path / "bad").exists()
    assert run("--merge-into", "lora/a", "-o", str(tmp_path / "bad")).code != 0  # an adapter is no base
