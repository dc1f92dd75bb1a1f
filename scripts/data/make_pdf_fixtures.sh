#!/usr/bin/env bash
# Makes the small PDF fixtures of tests/pdf.rs from the real PDFs in
# ../shared/data/pdf-docs (Debian packages; see its PROVENANCE.md), with qpdf
# (Debian `qpdf`; only this script needs it):
#   tests/fixtures/pdf/mime-spec-p7-9.pdf   pages 7–9 of shared-mime-info-spec.pdf
#   tests/fixtures/pdf/encrypted.pdf        page 7 of it, AES-256 with user password "user"
# The truncated and zero-page PDFs are made inside the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
data="${1:-$here/../shared/data/pdf-docs}"
out="$here/tests/fixtures/pdf"
mkdir -p "$out"
qpdf --empty --pages "$data/shared-mime-info-spec.pdf" 7-9 -- "$out/mime-spec-p7-9.pdf"
qpdf --empty --pages "$data/shared-mime-info-spec.pdf" 7 -- /tmp/one-page.$$.pdf
qpdf --encrypt user owner 256 -- /tmp/one-page.$$.pdf "$out/encrypted.pdf"
rm -f /tmp/one-page.$$.pdf
sha256sum "$out"/*.pdf
