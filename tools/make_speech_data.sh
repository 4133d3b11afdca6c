#!/usr/bin/env bash
# Builds spoken data for Lathe's speech tasks with Debian's synthesisers and
# sox; nothing is downloaded.
#
#   tools/make_speech_data.sh OUT [--voices N] [--phrases K]
#
# OUT/digits/{train,validation,test}/WORD/*.wav
#     spoken digits ("zero" to "nine"), a folder per class: the layout
#     audio-classification reads.
# OUT/phrases/{train,validation,test}/metadata.jsonl and clips/*.wav
#     strings of three digits, {"audio": "clips/...", "text": "seven one
#     four"} per row: the layout speech-recognition reads.
#
# train and validation come from N espeak-ng voices (default 40): an accent
# and one of espeak-ng's voice variants each, every clip at its own speed
# and pitch, a third with white noise and a third with reverberation added
# by sox. The split is by voice, never by clip: one voice in five is kept
# for validation, so validation measures voices never trained on. test
# comes from another synthesiser, flite, and its voices. K phrases per voice
# (default 5). The same arguments give the same files.
#
# OUT/digits/recorded/WORD/asterisk.wav: real recordings, one speaker at
# 8 kHz (Debian's asterisk-core-sounds-en-wav), when that package is
# installed.
set -euo pipefail

usage() {
  echo "usage: tools/make_speech_data.sh OUT [--voices N] [--phrases K]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
OUT="$1"
shift
VOICES=40
PHRASES=5
while [ $# -gt 0 ]; do
  case "$1" in
    --voices) [ $# -ge 2 ] || usage; VOICES="$2"; shift ;;
    --phrases) [ $# -ge 2 ] || usage; PHRASES="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
for tool in espeak-ng flite sox; do
  command -v "$tool" >/dev/null || {
    echo "make_speech_data: $tool is missing (./run setup installs it)" >&2
    exit 2
  }
done

WORDS=(zero one two three four five six seven eight nine)
ACCENTS=(en-us en-gb en-gb-scotland en-gb-x-rp en-gb-x-gbclan en-gb-x-gbcwmd en-029)
mapfile -t VARIANTS < <(espeak-ng --voices=variant | awk 'NR > 1 { sub("!v/", "", $5); print $5 }')
[ "${#VARIANTS[@]}" -gt 0 ] || { echo "make_speech_data: espeak-ng lists no voice variants" >&2; exit 1; }
FLITE_VOICES=(kal awb rms slt kal16)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
rm -rf "$OUT/digits" "$OUT/phrases"

# A number from 0 to MOD-1 that depends only on its arguments.
pick() {
  local mod="$1"
  shift
  echo $(( $(printf '%s' "$*" | cksum | cut -d' ' -f1) % mod ))
}

# say SYNTH VOICE TEXT OUT_WAV EFFECT: EFFECT is clean, noise or reverb.
say() {
  local synth="$1" voice="$2" text="$3" out="$4" effect="$5"
  local raw="$TMP/raw.wav"
  if [ "$synth" = espeak ]; then
    local speed=$(( 130 + $(pick 70 "$voice" "$text" speed) ))
    local pitch=$(( 20 + $(pick 60 "$voice" "$text" pitch) ))
    espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$raw" "$text"
  else
    flite -voice "$voice" -t "$text" -o "$raw"
  fi
  mkdir -p "$(dirname "$out")"
  case "$effect" in
    clean) cp "$raw" "$out" ;;
    noise)
      sox -V1 "$raw" "$TMP/noise.wav" synth whitenoise vol 0.02
      sox -V1 -m "$raw" "$TMP/noise.wav" "$out" gain -n -3
      ;;
    reverb) sox -V1 "$raw" "$out" gain -6 reverb 40 gain -n -3 ;;
  esac
}

phrase_text() {
  local a b c
  a=$(pick 10 "$@" a); b=$(pick 10 "$@" b); c=$(pick 10 "$@" c)
  echo "${WORDS[$a]} ${WORDS[$b]} ${WORDS[$c]}"
}

# One voice's clips into SPLIT: the ten digits and K phrases.
voice_clips() {
  local synth="$1" voice="$2" tag="$3" split="$4"
  local effects=(clean noise reverb) d p text effect
  for d in "${!WORDS[@]}"; do
    effect=${effects[$(pick 3 "$tag" "$d" effect)]}
    [ "$synth" = flite ] && effect=clean
    say "$synth" "$voice" "${WORDS[$d]}" \
      "$OUT/digits/$split/${WORDS[$d]}/$tag.wav" "$effect"
  done
  for ((p = 0; p < PHRASES; p++)); do
    text=$(phrase_text "$tag" "$p")
    effect=${effects[$(pick 3 "$tag" "$p" phrase-effect)]}
    [ "$synth" = flite ] && effect=clean
    say "$synth" "$voice" "$text" "$OUT/phrases/$split/clips/$tag-$p.wav" "$effect"
    printf '{"audio": "clips/%s-%d.wav", "text": "%s"}\n' "$tag" "$p" "$text" \
      >> "$OUT/phrases/$split/metadata.jsonl"
  done
}

for ((v = 0; v < VOICES; v++)); do
  accent=${ACCENTS[$((v % ${#ACCENTS[@]}))]}
  variant=${VARIANTS[$(( (v * 13) % ${#VARIANTS[@]} ))]}
  split=train
  [ $((v % 5)) -eq 4 ] && split=validation
  voice_clips espeak "$accent+$variant" "$(printf 'v%03d' "$v")-$accent-$variant" "$split"
done
for voice in "${FLITE_VOICES[@]}"; do
  voice_clips flite "$voice" "flite-$voice" test
done

ASTERISK=/usr/share/asterisk/sounds/en/digits
if [ -f "$ASTERISK/9.wav" ]; then
  for d in "${!WORDS[@]}"; do
    mkdir -p "$OUT/digits/recorded/${WORDS[$d]}"
    cp "$ASTERISK/$d.wav" "$OUT/digits/recorded/${WORDS[$d]}/asterisk.wav"
  done
  echo "make_speech_data: recorded: 10 digit clips (asterisk-core-sounds-en-wav)" >&2
fi

for split in train validation test; do
  echo "make_speech_data: $split: $(find "$OUT/digits/$split" -name '*.wav' | wc -l) digit clips," \
       "$(wc -l < "$OUT/phrases/$split/metadata.jsonl") phrases" >&2
done
