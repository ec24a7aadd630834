"""The OpenPGP envelope against the real gpg binary: our seal, the acceptance rule, plain gpg peers."""

from __future__ import annotations

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import pytest

from ccm_connector.sftp import envelope

DOC = b"<return>plain text that must never survive a refusal</return>\n"


def _opened_or_refused(keys, data, workdir, pinned=None):
    pinned = pinned or [keys.partner, keys.expired]
    return envelope.open_envelope(keys.practice_home, data, pinned, workdir)


def test_seal_and_open_round_trip(keys, workdir):
    sealed = envelope.seal(keys.partner_home, DOC, [keys.practice, keys.partner], keys.partner)
    assert DOC not in sealed and b"plain text" not in sealed
    opened = _opened_or_refused(keys, sealed, workdir)
    assert opened.signer == keys.partner
    assert opened.plaintext.parent == workdir
    assert (workdir.stat().st_mode & 0o777) == 0o700
    assert opened.read_and_remove() == DOC
    assert list(workdir.iterdir()) == []


def test_a_file_encrypted_and_signed_by_plain_gpg_as_the_partner_is_accepted(keys, workdir):
    sealed = support.gpg_cli(
        keys.partner_home, "--encrypt", "--sign", "-u", keys.partner, "-r", keys.practice, data=DOC
    ).stdout
    opened = _opened_or_refused(keys, sealed, workdir)
    assert opened.signer == keys.partner
    assert opened.read_and_remove() == DOC


def test_our_sealed_file_decrypts_with_plain_gpg_holding_only_the_partner_keys(keys):
    sealed = envelope.seal(keys.practice_home, DOC, [keys.partner, keys.practice], keys.practice)
    # The partner home holds the partner's secret key and the practice's public key only.
    secrets = {
        k["fingerprint"] for k in envelope.keyring.gpg_for(keys.partner_home).list_keys(secret=True)
    }
    assert secrets == {keys.partner}
    result = support.gpg_cli(keys.partner_home, "--status-fd", "2", "--decrypt", data=sealed)
    status = result.stderr.decode()
    assert result.stdout == DOC
    assert "[GNUPG:] GOODSIG" in status
    assert f"[GNUPG:] VALIDSIG {keys.practice}" in status
    assert "DECRYPTION_INFO 2 9" in status  # MDC, cipher algorithm 9 = AES256


def test_seal_refuses_a_recipient_that_is_not_a_full_fingerprint(keys):
    with pytest.raises(envelope.SealError, match="40-hex"):
        envelope.seal(keys.practice_home, DOC, ["partner@test.invalid"], keys.practice)


def test_seal_fails_for_a_recipient_missing_from_the_keyring(keys):
    with pytest.raises(envelope.SealError, match="could not encrypt"):
        envelope.seal(keys.practice_home, DOC, ["0" * 40], keys.practice)


def _assert_refused(keys, data, workdir, match, **kw):
    with pytest.raises(envelope.Refused, match=match) as info:
        _opened_or_refused(keys, data, workdir, **kw)
    assert list(workdir.iterdir()) == [], "the plaintext must be deleted"
    return info.value


def test_an_unsigned_return_is_refused(keys, workdir):
    unsigned = support.gpg_cli(keys.partner_home, "--encrypt", "-r", keys.practice, data=DOC).stdout
    _assert_refused(keys, unsigned, workdir, "not signed")


def test_a_return_signed_by_a_key_in_the_keyring_that_is_not_pinned_is_refused(keys, workdir):
    sealed = envelope.seal(keys.stranger_home, DOC, [keys.practice], keys.stranger)
    refused = _assert_refused(keys, sealed, workdir, "not pinned")
    assert refused.signer == keys.stranger


def test_a_tampered_ciphertext_is_refused_and_its_plaintext_deleted(keys, workdir):
    big = DOC * 4000  # long enough that gpg writes plaintext before it notices
    sealed = bytearray(
        support.gpg_cli(
            keys.partner_home,
            "--compress-level",
            "0",
            "--encrypt",
            "--sign",
            "-u",
            keys.partner,
            "-r",
            keys.practice,
            data=big,
        ).stdout
    )
    sealed[len(sealed) // 2] ^= 0x01
    _assert_refused(keys, bytes(sealed), workdir, "decryption failed|signature|not")


def test_a_truncated_mdc_is_refused(keys, workdir):
    sealed = bytearray(envelope.seal(keys.partner_home, DOC, [keys.practice], keys.partner))
    sealed[-1] ^= 0xFF
    _assert_refused(keys, bytes(sealed), workdir, "decryption failed|signature")


def test_an_expired_partner_key_is_refused(keys, workdir):
    # Signed while the key was valid (2020), checked today: EXPKEYSIG.
    sealed = support.gpg_cli(
        keys.expired_home,
        "--faked-system-time",
        "20200601T000000",
        "--trust-model",
        "always",
        "--encrypt",
        "--sign",
        "-u",
        keys.expired,
        "-r",
        keys.practice,
        data=DOC,
    ).stdout
    _assert_refused(keys, sealed, workdir, "expired")


def test_a_signed_but_unencrypted_message_is_refused(keys, workdir):
    signed = support.gpg_cli(keys.partner_home, "--sign", "-u", keys.partner, data=DOC).stdout
    _assert_refused(keys, signed, workdir, "decryption failed")


def test_garbage_is_refused(keys, workdir):
    _assert_refused(keys, b"\x00not openpgp at all", workdir, "decryption failed")


def test_key_facts_report_an_encryption_subkey_that_expires_before_its_primary(keys):
    home = support.short_dir("u")
    envelope.keyring.prepare_home(home)
    try:
        support.gpg_cli(
            home,
            "--passphrase",
            "",
            "--quick-gen-key",
            "Sub <u@test.invalid>",
            "ed25519",
            "sign,cert",
            "2y",
        )
        fpr = envelope.keyring.gpg_for(home).list_keys()[0]["fingerprint"]
        support.gpg_cli(home, "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "10d")
        facts = envelope.keyring.key_facts(home, fpr)
    finally:
        envelope.keyring.stop_agent(home)
    assert facts is not None and not facts.expired
    assert (facts.usable_until - facts.expires).days < -300
