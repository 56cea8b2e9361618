"""Rendering and DKIM signing on one core against OpenSSL's own signing speed measured in the same run
(`openssl speed rsa2048 ed25519`, one process): what issue 16 asks is rendering + rsa-sha256 2048 signing at
0.7 x or more of `openssl speed`'s RSA signatures per second.

    .venv/bin/python -m bench.dkim_sign [--messages 3000]
"""

from __future__ import annotations

import argparse
import re
import subprocess

from bench.delivery_smtp import new_key, render_rate


def openssl_signs_per_second() -> dict[str, float]:
    """Signatures per second of one OpenSSL process: rsa2048 and ed25519."""
    out = subprocess.run(["openssl", "speed", "-seconds", "3", "rsa2048", "ed25519"], check=True,
                         capture_output=True, text=True).stdout
    rsa = re.search(r"^rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)", out, re.MULTILINE)
    ed = re.search(r"^\s*253 bits EdDSA \(Ed25519\)\s+\S+s\s+\S+s\s+([\d.]+)", out, re.MULTILINE)
    if rsa is None or ed is None:
        raise SystemExit(f"could not read openssl speed's output:\n{out}")
    return {"rsa2048": float(rsa[1]), "ed25519": float(ed[1])}


def main(messages: int) -> None:
    rsa, ed = new_key("rsa", "rsa1"), new_key("ed25519", "ed1")
    before = openssl_signs_per_second()
    rates = {"unsigned": render_rate({}, messages),
             "rsa-sha256 2048": render_rate({"acme.example": [rsa]}, messages),
             "ed25519-sha256": render_rate({"acme.example": [ed]}, messages),
             "both (dual)": render_rate({"acme.example": [ed, rsa]}, messages)}
    after = openssl_signs_per_second()
    openssl = {name: (before[name] + after[name]) / 2 for name in before}
    print(f"openssl speed, one process (mean of before and after): rsa2048 {openssl['rsa2048']:,.0f} sign/s, "
          f"ed25519 {openssl['ed25519']:,.0f} sign/s")
    for name, rate in rates.items():
        print(f"render + sign, 5 KB campaign message, {name}: {rate:,.0f} msg/s")
    print(f"rsa-sha256 2048: {rates['rsa-sha256 2048'] / openssl['rsa2048']:.2f} x openssl speed rsa2048 "
          "(target >= 0.7)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    main(parser.parse_args().messages)
