"""OpenSSF model signing (the ``model-signing`` package, optional: ``pip install 'dithub[signing]'``):
a signature over an exported model directory (or file) that tools outside dithub verify, e.g.
``model_signing verify key --signature OUT.sig --public_key key.pub OUT``. dithub signs with an
elliptic-curve private key in PEM (``openssl ecparam -genkey -name prime256v1``); the signature
is a Sigstore bundle over a manifest of every file's digest."""
from __future__ import annotations

from pathlib import Path

from ..errors import BadInput


def sign_model(model: Path, private_key: Path, signature: Path) -> Path:
    """Write the OpenSSF signature of ``model`` (a directory or a file) by ``private_key`` to
    ``signature`` (outside the model, so it is not part of what it signs)."""
    try:
        from model_signing import signing
    except ImportError as exc:
        raise BadInput(f"OpenSSF model signing needs the model-signing package ({exc})", "pip install 'dithub[signing]'") from None
    if not Path(private_key).is_file():
        raise BadInput(f"model signing key {private_key}: no such file", "an EC private key in PEM")
    if Path(signature).resolve().is_relative_to(Path(model).resolve()) and Path(model).is_dir():
        raise BadInput(f"the signature {signature} would lie inside the model it signs", "write it beside the directory")
    try:
        config = signing.Config()  # type: ignore[no-untyped-call]
        config.use_elliptic_key_signer(private_key=str(private_key)).sign(str(model), str(signature))
    except (ValueError, TypeError) as exc:
        raise BadInput(f"model signing key {private_key} cannot sign: {exc}", "an unencrypted EC private key in PEM") from None
    return Path(signature)
