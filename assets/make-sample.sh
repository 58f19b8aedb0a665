#!/bin/sh
# Regenerates assets/sample.mp4: 16 s of 1280x720 25 fps H.264 (main, yuv420p, ~2 Mbps,
# a keyframe exactly every 2 s) + AAC stereo sine tone. Needs the ffmpeg CLI with libx264.
# drawtext (libfreetype) is used when available to burn a running timestamp and frame
# counter into the picture; without it the plain testsrc2 pattern is used.
set -eu
cd "$(dirname "$0")"

FONT=/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf
VF=""
if ffmpeg -hide_banner -filters 2>/dev/null | grep -q ' drawtext ' && [ -f "$FONT" ]; then
    VF="drawtext=fontfile=$FONT:fontsize=48:fontcolor=white:box=1:boxcolor=black@0.6:x=(w-tw)/2:y=h-th-60:text='meshtv sample  t=%{pts\:hms}  frame=%{n}'"
fi

ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=25:duration=16" \
    -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000:duration=16" \
    ${VF:+-vf "$VF"} \
    -c:v libx264 -pix_fmt yuv420p -profile:v main -preset medium \
    -b:v 2M -maxrate 2M -bufsize 2M \
    -g 50 -keyint_min 50 -sc_threshold 0 \
    -c:a aac -ac 2 -b:a 128k \
    -map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
    -movflags +faststart \
    -t 16 \
    sample.mp4
