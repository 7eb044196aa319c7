"""Signed commits (SSH signatures, as git signs with ``ssh-keygen -Y sign``): signing and checking
with keys made here by ``cryptography``, checked independently by the ``sshsig`` package (and by
ssh-keygen itself where the machine has it), an untrusted signer, a tampered tensor under a signed
commit, a policy per branch pattern, and fetch --verify-signatures."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from safetensors.torch import save_file

from dithub import Repo
from dithub.errors import RemoteError
from dithub.formats.sshsig import SignatureError, sign, verify
from dithub.ops.sync import fetch, push, remote_add


def _key(path: Path, kind: str = "ed25519") -> str:
    """A private key file (OpenSSH format) and its public line."""
    key = {"ed25519": lambda: ed25519.Ed25519PrivateKey.generate(), "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
           "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)}[kind]()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    path.chmod(0o600)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_signatures_verify_independently(tmp_path, kind):
    import sshsig

    public = _key(tmp_path / "k", kind)
    from dithub.formats.sshsig import load_private_key

    message = b"commit\n{...}"
    armored = sign(message, load_private_key(tmp_path / "k"), "dithub")
    assert verify(message, armored, "dithub").split()[:2] == public.split()[:2]
    if kind != "ecdsa":  # the sshsig package reads Ed25519 and RSA keys (ssh-keygen, below, reads all three)
        allowed = [sshsig.PublicKey.from_openssh_str(public)]
        sshsig.verify(message, armored, allowed, namespace="dithub")  # another implementation of the format agrees
        with pytest.raises(sshsig.InvalidSignature):
            sshsig.verify(message + b"!", armored, allowed, namespace="dithub")
    with pytest.raises(SignatureError, match="do(es)? not match"):
        verify(message + b"!", armored, "dithub")
    with pytest.raises(SignatureError, match="namespace 'dithub', not 'git'"):
        verify(message, armored, "git")  # a commit signature is no git signature, nor the reverse
    if shutil.which("ssh-keygen"):  # the reference tool, where the machine has it
        (tmp_path / "allowed").write_text(f"me@example.org {public}\n")
        (tmp_path / "sig").write_text(armored)
        ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "me@example.org",
                             "-n", "dithub", "-s", str(tmp_path / "sig")], input=message, capture_output=True)
        assert ok.returncode == 0, ok.stderr
        theirs = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(tmp_path / "k"), "-n", "dithub"], input=message,
                                capture_output=True, check=True).stdout.decode()
        assert verify(message, theirs, "dithub").split()[:2] == public.split()[:2]


@pytest.fixture
def signed_repo(tmp_path, cli):
    repo = Repo.init(tmp_path / "r")
    alice, mallory = _key(tmp_path / "alice"), _key(tmp_path / "mallory")
    (tmp_path / "allowed").write_text(f"alice@example.org namespaces=\"dithub\" {alice}\n")
    for i, name in enumerate(("client/a", "client/b")):
        save_file({"w": torch.full((64,), float(i)), "b": torch.ones(8)}, str(tmp_path / f"t{i}.safetensors"))
        res = cli(f"commit {tmp_path}/t{i}.safetensors -m {name} -b {name} -S --signing-key {tmp_path}/alice", cwd=repo.path)
        assert res.code == 0, res.err
    save_file({"w": torch.full((64,), 9.0), "b": torch.ones(8)}, str(tmp_path / "t9.safetensors"))
    assert cli(f"commit {tmp_path}/t9.safetensors -m intruder -b client/m -S --signing-key {tmp_path}/mallory", cwd=repo.path).code == 0
    assert cli(f"commit {tmp_path}/t9.safetensors -m plain -b plain", cwd=repo.path).code == 0
    return repo, tmp_path, mallory


def test_signed_commits_show_their_signer(signed_repo, cli):
    repo, root, _ = signed_repo
    assert repo.signature("client/a").status == "untrusted"  # no allowed-signers file yet
    assert cli(f"config signing.allowedsigners {root}/allowed", cwd=repo.path).code == 0
    good = repo.signature("client/a")
    assert good.status == "good" and good.principals == ("alice@example.org",)
    assert repo.signature("client/m").status == "untrusted" and repo.signature("plain").status == "unsigned"
    out = cli("log client/a --show-signature", cwd=repo.path).out
    assert "good signature by alice@example.org" in out
    assert "untrusted key" in cli("show client/m", cwd=repo.path).out
    commit = repo.commit_object("client/a")
    assert commit.signature is not None and commit.payload() != commit.encode()  # the id covers the signature too
    # a merge signs with the configured key
    assert cli(f"config user.signingkey {root}/alice", cwd=repo.path).code == 0
    assert cli("merge client/a client/b --method task_arithmetic --into merged -S", cwd=repo.path).code == 0
    assert repo.signature("merged").status == "good"
    assert cli("revert merged --into merged -S", cwd=repo.path).code == 0  # revert signs too (rebase: the same writer)
    assert repo.signature("merged").status == "good" and repo.commit_object("merged").op.name == "revert"
    Repo.init(root / "fresh")
    assert "no signing key" in cli(f"commit {root}/t0.safetensors -m x -b y -S", cwd=root / "fresh").err


def test_a_tampered_tensor_under_a_signed_commit_fails_fsck_and_verify(signed_repo, cli):
    repo, root, _ = signed_repo
    (root / "dithub.toml").write_text(f'[verify]\nrequire_signed = true\nallowed_signers = "{root}/allowed"\nchecks = ["integrity", "signature"]\n')
    assert cli(f"verify client/a --policy {root}/dithub.toml", cwd=repo.path).code == 0
    entry = repo.tree_of("client/a").tensors["w"]
    path = repo.path / ".dithub" / "objects" / entry.id[:2] / entry.id[2:]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert cli("fsck", cwd=repo.path).code != 0
    res = cli(f"verify client/a --policy {root}/dithub.toml --json", cwd=repo.path)
    assert res.code == 11 and '"integrity"' in res.out and "fail" in res.out  # the signature is good; the bytes it pins are not


def test_a_policy_per_branch_pattern(signed_repo, cli):
    repo, root, mallory = signed_repo
    bob = _key(root / "bob")
    (root / "allowed").write_text(f"alice@example.org {_public(root / 'alice')}\nbob@clients.example {bob}\n")
    save_file({"w": torch.full((64,), 5.0), "b": torch.ones(8)}, str(root / "t5.safetensors"))
    assert cli(f"commit {root}/t5.safetensors -m bob -b client/bob -S --signing-key {root}/bob", cwd=repo.path).code == 0
    (root / "dithub.toml").write_text(
        '[verify]\nrequire_signed = true\nallowed_signers = "allowed"\nchecks = ["signature"]\n'
        '[branches."client/*"]\nsigners = ["*@clients.example"]\n[branches."main"]\nsigners = ["alice@example.org"]\n')
    policy = str(root / "dithub.toml")
    statuses = {b: repo.verify(b, policy=policy).checks[0] for b in ("client/bob", "client/a", "client/m", "plain")}
    assert statuses["client/bob"].status == "pass"  # bob may sign client branches
    assert statuses["client/a"].status == "fail" and "may not sign client/a" in statuses["client/a"].detail  # alice may not
    assert statuses["client/m"].status == "fail" and "untrusted" in statuses["client/m"].detail
    assert statuses["plain"].status == "fail" and "unsigned" in statuses["plain"].detail
    forged = repo.commit_object("client/bob")
    from dataclasses import replace

    evil = repo.store.write_commit(replace(forged, message="rewritten"))  # the signature no longer covers it
    repo.refs.set_if_equals("refs/heads/forged", None, evil, "test")
    bad = repo.verify("forged", policy=policy).checks[0]
    assert bad.status == "fail" and "bad signature" in bad.detail


def _public(private: Path) -> str:
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_fetch_verify_signatures_refuses_untrusted_heads(signed_repo, tmp_path, cli):
    repo, root, _ = signed_repo
    remote_add(repo, "origin", str(tmp_path / "remote"))
    push(repo, "origin", ["client/a", "client/m"])
    other = Repo.init(tmp_path / "other")
    remote_add(other, "origin", str(tmp_path / "remote"))
    res = cli("fetch origin --verify-signatures", cwd=other.path)
    assert res.code != 0 and "allowed signers" in res.err
    other.config("signing.allowedsigners", str(root / "allowed"))
    with pytest.raises(RemoteError, match="client/m .* no good signature: untrusted"):
        fetch(other, "origin", verify_signatures=True)
    assert other.refs.names("refs/remotes/") == []  # no ref moved
    fetch(other, "origin", ["client/a"], verify_signatures=True)
    assert other.refs.names("refs/remotes/") == ["refs/remotes/origin/client/a"]


def test_export_writes_an_openssf_model_signature(signed_repo, tmp_path, cli):
    from model_signing import verifying

    repo, _root, _ = signed_repo
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (tmp_path / "ec.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    res = cli(f"export client/a -o {tmp_path}/out --model-signing-key {tmp_path}/ec.pem", cwd=repo.path)
    assert res.code == 0, res.err
    signature = next((tmp_path / "out").rglob("*.sig"))  # beside what export wrote (here: the task vector file)
    exported = signature.with_name(signature.name[: -len(".sig")])
    verify = verifying.Config().use_elliptic_key_verifier(public_key=str(tmp_path / "ec.pub"))
    verify.verify(str(exported), str(signature))  # the OpenSSF tool's own verifier accepts it
    target = exported if exported.is_file() else next(p for p in exported.rglob("*") if p.suffix == ".safetensors")
    target.write_bytes(target.read_bytes()[:-1] + bytes([target.read_bytes()[-1] ^ 1]))
    with pytest.raises(ValueError):
        verify.verify(str(exported), str(signature))


def test_signed_tags(signed_repo, tmp_path, cli):
    repo, root, _ = signed_repo
    repo.config("signing.allowedsigners", str(root / "allowed"))
    assert cli(f"tag v1 client/a -s --signing-key {root}/alice -m 'release 1'", cwd=repo.path).code == 0
    assert cli("tag v0 client/a", cwd=repo.path).code == 0  # lightweight
    res = cli("tag -v v1", cwd=repo.path)
    assert res.code == 0 and "good signature by alice@example.org" in res.out
    assert cli("tag -v v0", cwd=repo.path).code != 0
    tag_oid = repo.refs.resolve("refs/tags/v1")
    assert tag_oid != repo.resolve("client/a") and repo.resolve("v1") == repo.resolve("client/a")  # the ref names the tag object
    assert repo.store.read_tag(tag_oid).message == "release 1" and repo.fsck().ok
    from dataclasses import replace

    forged = repo.store.write(replace(repo.store.read_tag(tag_oid), message="release 2").encode())  # the signature no longer covers it
    repo.refs.set_if_equals("refs/tags/v2", None, forged, "test")
    assert repo.tag_signature("v2").status == "bad" and "does not match" in repo.tag_signature("v2").detail
    # tag objects travel (a clone of this working repository brings its tags), and gc and fsck keep and check them
    clone, _ = Repo.clone(str(repo.path), tmp_path / "clone")
    clone.config("signing.allowedsigners", str(root / "allowed"))
    assert clone.refs.resolve("refs/tags/v1") == tag_oid and clone.tag_signature("v1").status == "good" and clone.fsck().ok
    assert cli("gc --prune-now", cwd=repo.path).code == 0 and repo.fsck().ok and repo.store.contains(tag_oid)
    assert cli("migrate --hash xxh3", cwd=repo.path).code == 0  # tag objects follow their commits (unsigned now)
    migrated = Repo.open(repo.path)
    assert migrated.resolve("v1") == migrated.resolve("client/a") and migrated.tag_signature("v1").status == "unsigned"
    assert migrated.store.read_tag(migrated.refs.resolve("refs/tags/v1")).message == "release 1" and migrated.fsck().ok


def test_a_merge_run_on_a_remote_is_signed_too(signed_repo, tmp_path, cli):
    repo, root, _ = signed_repo
    repo.config("signing.allowedsigners", str(root / "allowed"))
    remote_add(repo, "origin", str(tmp_path / "remote"))
    push(repo, "origin", ["client/a", "client/b"])
    res = cli(f"merge client/a client/b --method task_arithmetic --into m --remote origin -S --signing-key {root}/alice",
              cwd=repo.path)
    assert res.code == 0, res.err
    assert repo.signature("origin/m").status == "good"
