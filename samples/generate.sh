#!/usr/bin/env bash
# Synthesise the chorus demo tracks and package each as an HLS/CMAF audio ladder.
#
# Everything is generated here from scratch with ffmpeg's `aevalsrc` filter:
# no recordings, no downloads. The music is our own work (Apache-2.0, like
# the rest of the repository).
#
# Usage (from the repository root):   samples/generate.sh
#
# Output, per track id:
#   samples/<id>/title.txt
#   samples/<id>/master.m3u8
#   samples/<id>/aac-24/{index.m3u8,init_0.mp4,seg00000.m4s,...}   24 kb/s mono
#   samples/<id>/aac-96/{index.m3u8,init_1.mp4,seg00000.m4s,...}   96 kb/s stereo
#
# The script is idempotent and deterministic: running it twice gives
# byte-identical files.
set -euo pipefail

export LC_ALL=C
FFMPEG=${FFMPEG:-ffmpeg}
FFPROBE=${FFPROBE:-ffprobe}
SAMPLES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RATE=44100

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------
# Expression builders
# ---------------------------------------------------------------------------

# freq NOTE -> frequency in Hz (equal temperament, A4 = 440 Hz).
# NOTE is a letter, an optional '#' or 'b', and an octave: C4, F#5, Bb2.
freq() {
    awk -v n="$1" 'BEGIN {
        semis["C"] = 0; semis["D"] = 2; semis["E"] = 4; semis["F"] = 5
        semis["G"] = 7; semis["A"] = 9; semis["B"] = 11
        letter = substr(n, 1, 1); rest = substr(n, 2); acc = 0
        if (!(letter in semis)) { print "bad note: " n > "/dev/stderr"; exit 1 }
        if (substr(rest, 1, 1) == "#") { acc = 1;  rest = substr(rest, 2) }
        else if (substr(rest, 1, 1) == "b") { acc = -1; rest = substr(rest, 2) }
        if (rest !~ /^[0-9]$/) { print "bad note: " n > "/dev/stderr"; exit 1 }
        midi = 12 * (rest + 1) + semis[letter] + acc
        printf "%.3f", 440 * 2 ^ ((midi - 69) / 12)
    }'
}

# voice BPM GAIN WAVE ENV SEQUENCE -> an aevalsrc expression for one voice.
#
# SEQUENCE is a space-separated list of NOTE:BEATS tokens played one after
# the other; NOTE may be a chord (C4+E4+G4) or `r` for a rest.
# WAVE and ENV are expression templates in which
#   {F} is the note frequency (Hz),
#   {T} is the time since the note started (s),
#   {L} is the note length (s).
# Each note becomes a term `if(between(t,START,END), GAIN*ENV*WAVE)`, so only
# the notes that are sounding are evaluated.
voice() {
    local bpm=$1 gain=$2 wave=$3 env=$4 seq=$5
    local expr="" pos=0 tok note beats start len end n f term
    for tok in $seq; do
        note=${tok%%:*}
        beats=${tok#*:}
        read -r start len end < <(awk -v p="$pos" -v b="$beats" -v bpm="$bpm" \
            'BEGIN { s = 60 / bpm; printf "%.4f %.4f %.4f\n", p * s, b * s, (p + b) * s }')
        pos=$(awk -v p="$pos" -v b="$beats" 'BEGIN { print p + b }')
        [[ $note == r ]] && continue
        for n in ${note//+/ }; do
            f=$(freq "$n")
            term="${gain}*(${env})*(${wave})"
            term=${term//\{F\}/$f}
            term=${term//\{T\}/(t-$start)}
            term=${term//\{L\}/$len}
            expr+="${expr:++}if(between(t,${start},${end}),${term})"
        done
    done
    printf '%s' "${expr:-0}"
}

# Envelopes (attack ramp * decay * short release so every note ends at 0
# and is heard as a separate note).
env_pluck='min(1,{T}/0.008)*exp(-3.0*{T})*min(1,({L}-{T})/0.04)'
env_soft='min(1,{T}/0.06)*exp(-0.9*{T})*min(1,({L}-{T})/0.08)'
env_pad='min(1,{T}/0.35)*min(1,({L}-{T})/0.30)'
env_bell='min(1,{T}/0.004)*exp(-2.2*{T})*min(1,({L}-{T})/0.05)'
env_bass='min(1,{T}/0.01)*exp(-1.6*{T})*min(1,({L}-{T})/0.05)'

# Timbres.
# Warm additive tone: fundamental plus a few decreasing harmonics.
wave_warm='sin(2*PI*{F}*{T})+0.30*sin(4*PI*{F}*{T})+0.12*sin(6*PI*{F}*{T})'
# Pure sine with a gentle vibrato (5 Hz, +-0.5 %) that fades in.
wave_vibrato='sin(2*PI*{F}*{T}+0.001*{F}*min(1,{T}/0.6)*sin(2*PI*5*{T}))'
# Pad: fundamental and a slightly detuned octave for a chorus-like shimmer.
wave_pad='sin(2*PI*{F}*{T})+0.25*sin(2*PI*2.003*{F}*{T})'
# Music-box bell: FM with a fast-decaying modulation index.
wave_bell='sin(2*PI*{F}*{T}+1.4*exp(-5*{T})*sin(2*PI*2*{F}*{T}))+0.15*exp(-6*{T})*sin(2*PI*4.2*{F}*{T})'
# Round bass: fundamental plus 2nd and 3rd harmonics so it is audible on
# small speakers.
wave_bass='sin(2*PI*{F}*{T})+0.5*sin(4*PI*{F}*{T})+0.25*sin(6*PI*{F}*{T})'

declare -A DURATION   # track id -> duration in seconds, filled by render

# render ID DURATION MELODY ACCOMPANIMENT POSTFILTERS
# Melody and accompaniment are two channels of one aevalsrc; `pan` mixes them
# into stereo with the melody slightly left and the accompaniment slightly
# right. POSTFILTERS is an extra filter chain (may be empty).
render() {
    local id=$1 dur=$2 mel=$3 acc=$4 post=$5
    DURATION[$id]=$dur
    local graph="aevalsrc=exprs='${mel}|${acc}':s=${RATE}:d=${dur}"
    graph+=",pan=stereo|c0=0.62*c0+0.38*c1|c1=0.38*c0+0.62*c1"
    [[ -n $post ]] && graph+=",${post}"
    graph+=",atrim=end=${dur}"   # effects such as aecho add a tail; cut it
    graph+=",afade=t=in:d=0.02,afade=t=out:st=$(awk -v d="$dur" 'BEGIN { print d - 1.5 }'):d=1.5"
    printf '%s' "$graph" > "$WORK/$id.graph"
    "$FFMPEG" -hide_banner -nostdin -loglevel error -y \
        -filter_complex_script "$WORK/$id.graph" \
        -c:a pcm_s16le -ar "$RATE" -ac 2 \
        -fflags +bitexact -flags:a +bitexact -map_metadata -1 \
        "$WORK/$id.wav"
}

# package ID TITLE: WAV -> HLS/CMAF ladder. These encoder options must stay
# identical to the encoder in the product.
package() {
    local id=$1 title=$2
    local OUT="$SAMPLES_DIR/$id"
    rm -rf "$OUT"
    mkdir -p "$OUT"
    "$FFMPEG" -hide_banner -nostdin -loglevel error -y -i "$WORK/$id.wav" \
      -map 0:a:0 -map 0:a:0 \
      -c:a aac -ar 44100 -b:a:0 24k -ac:a:0 1 -b:a:1 96k -ac:a:1 2 \
      -fflags +bitexact -flags:a +bitexact -map_metadata -1 \
      -f hls -hls_time 6 -hls_playlist_type vod -hls_segment_type fmp4 \
      -hls_fmp4_init_filename init.mp4 -hls_segment_filename "$OUT/%v/seg%05d.m4s" \
      -master_pl_name master.m3u8 -var_stream_map "a:0,name:aac-24 a:1,name:aac-96" "$OUT/%v/index.m3u8"
    printf '%s\n' "$title" > "$OUT/title.txt"
}

# ---------------------------------------------------------------------------
# Track 1: "Sunrise" -- D major, 104 bpm, 4/4, warm plucked melody over a
# slow pad and a root/fifth bass. Progression: D G Bm A | D G A7 D.
# ---------------------------------------------------------------------------
sunrise_melody="
    D5:1 F#5:1 A5:1 F#5:1
    G5:1 A5:0.5 B5:0.5 A5:2
    F#5:1 E5:1 D5:1 E5:1
    F#5:2 E5:1 r:1
    D5:1 F#5:1 A5:1 D6:1
    B5:1 A5:0.5 G5:0.5 A5:2
    G5:1 F#5:1 E5:1 C#5:1
    D5:4"
sunrise_pad="
    D4+F#4+A4:4 D4+G4+B4:4 D4+F#4+B4:4 C#4+E4+A4:4
    D4+F#4+A4:4 D4+G4+B4:4 C#4+E4+G4:4 D4+F#4+A4:4"
sunrise_bass="
    D2:2 A2:2  G2:2 D3:2  B2:2 F#2:2  A2:2 E2:2
    D2:2 A2:2  G2:2 D3:2  A2:2 E2:2   D2:4"

mel=$(voice 104 0.40 "$wave_warm" "$env_pluck" "$sunrise_melody")
acc="$(voice 104 0.12 "$wave_pad" "$env_pad" "$sunrise_pad")+$(voice 104 0.36 "$wave_bass" "$env_bass" "$sunrise_bass")"
render chorus-sunrise 19.5 "$mel" "$acc" ""
package chorus-sunrise "Sunrise"

# ---------------------------------------------------------------------------
# Track 2: "Tides" -- A minor, 76 bpm, 3/4, a slow singing sine melody with
# vibrato over rolling eighth-note arpeggios (like waves), with a soft echo.
# Progression: Am F C G | Am Dm E Am.
# ---------------------------------------------------------------------------
tides_melody="
    E5:2 A5:1
    A5:1.5 G5:0.5 F5:1
    E5:2 G5:1
    D5:3
    E5:1 A5:1 B5:1
    C6:2 A5:1
    B5:1.5 G#5:0.5 E5:1
    A5:4.5"
# arpeggio CHORD_TONES: root fifth octave tenth octave fifth (six eighths).
arpeggio() { local r=$1 f=$2 o=$3 x=$4; printf '%s:0.5 %s:0.5 %s:0.5 %s:0.5 %s:0.5 %s:0.5 ' "$r" "$f" "$o" "$x" "$o" "$f"; }
tides_arp="
    $(arpeggio A2 E3 A3 C4)
    $(arpeggio F2 C3 F3 A3)
    $(arpeggio C3 G3 C4 E4)
    $(arpeggio G2 D3 G3 B3)
    $(arpeggio A2 E3 A3 C4)
    $(arpeggio D3 A3 D4 F4)
    $(arpeggio E2 B2 E3 G#3)
    A2:0.5 E3:0.5 A3:0.5 C4:0.5 E4:0.5 A4:2"

mel=$(voice 76 0.70 "$wave_vibrato" "$env_soft" "$tides_melody")
acc=$(voice 76 0.37 "$wave_warm" "$env_pluck" "$tides_arp")
render chorus-tides 21 "$mel" "$acc" "aecho=0.9:0.8:190|330:0.25|0.12"
package chorus-tides "Tides"

# ---------------------------------------------------------------------------
# Track 3: "Lantern" -- F major, 126 bpm, 4/4, a music-box bell melody in
# eighths over a walking plucked bass.
# Progression: F Dm Bb C | F Am Bb C | C F.
# ---------------------------------------------------------------------------
lantern_melody="
    C5:0.5 F5:0.5 A5:0.5 C6:0.5 A5:1 F5:1
    D5:0.5 F5:0.5 A5:0.5 D6:0.5 C6:1 A5:1
    Bb4:0.5 D5:0.5 F5:0.5 Bb5:0.5 A5:0.5 G5:0.5 F5:1
    G5:1.5 A5:0.5 G5:1 E5:1
    F5:0.5 A5:0.5 C6:1 A5:0.5 F5:0.5 C5:1
    E5:0.5 A5:0.5 C6:1 E6:1 C6:1
    D6:1 C6:0.5 Bb5:0.5 A5:1 G5:1
    G5:0.5 A5:0.5 Bb5:0.5 G5:0.5 E5:1 C5:1
    E5:1 G5:0.5 A5:0.5 Bb5:1 E5:1
    F5+A5:4"
# walk ROOT FIFTH OCTAVE: root fifth octave fifth in quarter notes.
walk() { printf '%s:1 %s:1 %s:1 %s:1 ' "$1" "$2" "$3" "$2"; }
lantern_bass="
    $(walk F2 C3 F3) $(walk D2 A2 D3) $(walk Bb1 F2 Bb2) $(walk C2 G2 C3)
    $(walk F2 C3 F3) $(walk A2 E3 A3) $(walk Bb1 F2 Bb2) $(walk C2 G2 C3)
    $(walk C2 G2 C3) F2+C3+F3:4"

mel=$(voice 126 0.32 "$wave_bell" "$env_bell" "$lantern_melody")
acc=$(voice 126 0.27 "$wave_bass" "$env_bass" "$lantern_bass")
render chorus-lantern 20.5 "$mel" "$acc" ""
package chorus-lantern "Lantern"

# ---------------------------------------------------------------------------
# Verification: every rendition decodes cleanly to the expected duration and
# both renditions of a track are segmented identically.
# ---------------------------------------------------------------------------
verify() {
    local id=$1 dur=${DURATION[$1]} dir="$SAMPLES_DIR/$1" v got errs ref="" inf
    for v in aac-24 aac-96; do
        cat "$dir/$v"/init_*.mp4 "$dir/$v"/seg*.m4s > "$WORK/check.mp4"
        got=$("$FFPROBE" -v error -show_entries format=duration -of csv=p=0 "$WORK/check.mp4")
        errs=$("$FFMPEG" -hide_banner -nostdin -v error -i "$WORK/check.mp4" -f null - 2>&1)
        if [[ -n $errs ]]; then
            echo "error: $id/$v does not decode cleanly: $errs" >&2; exit 1
        fi
        if ! awk -v a="$got" -v b="$dur" 'BEGIN { d = a - b; exit !(d < 0.05 && d > -0.05) }'; then
            echo "error: $id/$v lasts $got s, expected $dur s" >&2; exit 1
        fi
        inf=$(grep '^#EXTINF' "$dir/$v/index.m3u8")
        if [[ -z $ref ]]; then
            ref=$inf
        elif [[ $inf != "$ref" ]]; then
            echo "error: $id renditions are segmented differently" >&2; exit 1
        fi
        printf '%-15s %-6s %8.3f s  %d segments\n' "$id" "$v" "$got" "$(grep -c '^#EXTINF' <<< "$inf")"
    done
}
for id in chorus-sunrise chorus-tides chorus-lantern; do
    verify "$id"
done
