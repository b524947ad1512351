"""GM instrument families: single notes of the 128 General MIDI melodic programs, rendered from a
SoundFont with fluidsynth, labelled by GM family (program // 8, 16 classes), split by pitch.

A real, non-saturated music task the project renders itself (no Hub access on its machines):
Debian's `fluid-soundfont-gm` (FluidR3 GM, real sampled instruments) and `fluidsynth`. Every note
sits in its own 1 s slot of ONE MIDI file (tempo 120, note-on at the slot start, note-off after
2/3 s, all-sound-off at the slot end), rendered in one fluidsynth call (16 kHz, reverb and chorus
off, gain 0.6) and cut into 1 s mono clips; silent clips (peak below 30/32768) are skipped. The
result is an `audiofolder` layout (`OUT/{train,validation,test}/{family}/*.wav`) that
`recipes/classify.py --data_dir OUT` reads. Train, validation and test hold different pitches:
choose hyper-parameters on validation, never on test.

    python benchmarks/audio_data/gm_instruments.py --out data/gm_instruments
    python benchmarks/audio_data/gm_instruments.py --out my_instruments --soundfont my.sf2 \
        --train_pitches 48 60 --test_pitches 55 67 --validation_pitches 52 64 --velocities 80 110

The same inputs give byte-identical clips (checked by the tests).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import mido
import numpy as np
import soundfile as sf

FAMILIES = (
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
)
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
DEFAULT_PITCHES = {
    "train": (40, 52, 64, 76),
    "validation": (43, 55, 67, 79),
    "test": (46, 58, 70, 82),
}
SAMPLE_RATE = 16_000
TICKS_PER_BEAT = 480
TEMPO = mido.bpm2tempo(120)  # 0.5 s a beat: one 1 s slot is two beats
SLOT_TICKS = 2 * TICKS_PER_BEAT
NOTE_TICKS = SLOT_TICKS * 2 // 3  # note-off after 2/3 s
SILENCE_PEAK = 30  # of 32768: a program that sounds nothing at this pitch
ALL_SOUND_OFF = 120  # MIDI control change number


@dataclass(frozen=True)
class Note:
    """One rendered note: its GM program (0-127), MIDI pitch, velocity and split."""

    program: int
    pitch: int
    velocity: int
    split: str

    @property
    def family(self) -> str:
        """The GM family, the class label: program // 8."""
        return FAMILIES[self.program // 8]

    @property
    def file_name(self) -> str:
        """`{program}_p{pitch}_v{velocity}.wav`, zero-padded so names sort by program."""
        return f"{self.program:03d}_p{self.pitch:03d}_v{self.velocity:03d}.wav"


def plan_notes(pitches: dict[str, tuple[int, ...]], velocities: tuple[int, ...]) -> list[Note]:
    """Every (split, pitch, velocity, program) note, in the order they are rendered.

    Args:
        pitches: MIDI pitches (0-127) of each split; a pitch may belong to one split only.
        velocities: MIDI velocities (1-127) every note is rendered at.
    """
    seen: dict[int, str] = {}
    for split, values in pitches.items():
        for pitch in values:
            if not 0 <= pitch <= 127:
                raise ValueError(f"Pitch {pitch} of split {split!r} is outside MIDI's 0-127.")
            if pitch in seen and seen[pitch] != split:
                raise ValueError(
                    f"Pitch {pitch} is in both {seen[pitch]!r} and {split!r}: the splits must "
                    "hold different pitches, or the test notes are trained on."
                )
            seen[pitch] = split
    for velocity in velocities:
        if not 1 <= velocity <= 127:
            raise ValueError(f"Velocity {velocity} is outside MIDI's 1-127 (0 is a note-off).")
    return [
        Note(program, pitch, velocity, split)
        for split, values in pitches.items()
        for pitch in values
        for velocity in velocities
        for program in range(128)
    ]


def write_midi(notes: list[Note], path: str) -> None:
    """One single-track MIDI file with every note in its own 1 s slot, on channel 0.

    Each slot: program change and note-on at its start, note-off after 2/3 s, all-sound-off at
    its end (so a long release cannot leak into the next clip).

    Args:
        notes: The notes, in slot order.
        path: The `.mid` file to write.
    """
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=TEMPO, time=0)])
    for note in notes:
        track.append(mido.Message("program_change", program=note.program, time=0))
        track.append(mido.Message("note_on", note=note.pitch, velocity=note.velocity, time=0))
        track.append(mido.Message("note_off", note=note.pitch, velocity=0, time=NOTE_TICKS))
        track.append(
            mido.Message(
                "control_change", control=ALL_SOUND_OFF, value=0, time=SLOT_TICKS - NOTE_TICKS
            )
        )
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(path)


def render(soundfont: str, midi_path: str, wav_path: str, fluidsynth: str = "fluidsynth") -> None:
    """Renders the MIDI file in one fluidsynth call: 16 kHz, 16-bit, reverb and chorus off,
    gain 0.6.

    Args:
        soundfont: The `.sf2` file.
        midi_path: The `.mid` file.
        wav_path: The stereo `.wav` file to write.
        fluidsynth: The fluidsynth executable.
    """
    if shutil.which(fluidsynth) is None:
        raise FileNotFoundError(
            f"{fluidsynth} not found: install fluidsynth (Debian: apt-get install fluidsynth "
            "fluid-soundfont-gm; `make install` does it)."
        )
    if not os.path.isfile(soundfont):
        raise FileNotFoundError(
            f"SoundFont {soundfont} not found: install Debian's fluid-soundfont-gm or pass "
            "--soundfont PATH."
        )
    command = [
        fluidsynth,
        "-n",  # no MIDI input driver
        "-i",  # no shell
        "-q",
        "-R", "0",
        "-C", "0",
        "-g", "0.6",
        "-r", str(SAMPLE_RATE),
        "-T", "wav",
        "-O", "s16",
        "-F", wav_path,
        soundfont,
        midi_path,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.isfile(wav_path):
        raise RuntimeError(f"fluidsynth failed ({done.returncode}): {done.stderr.strip()}")


def cut_clips(wav_path: str, count: int) -> np.ndarray:
    """The rendered file as `count` 1 s mono int16 clips (the channels' mean, rounded).

    Args:
        wav_path: fluidsynth's output.
        count: Number of slots.
    """
    audio, rate = sf.read(wav_path, dtype="int16", always_2d=True)
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz instead of {SAMPLE_RATE} Hz.")
    audio = np.pad(audio, ((0, max(0, count * SAMPLE_RATE - len(audio))), (0, 0)))
    mono = np.round(audio[: count * SAMPLE_RATE].astype(np.float64).mean(axis=1))
    return mono.astype(np.int16).reshape(count, SAMPLE_RATE)


def file_digest(path: str) -> str:
    """SHA-256 of a file (the SoundFont the clips came from is recorded by its digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def render_clips(soundfont: str, notes: list[Note], work: str) -> np.ndarray:
    """Every note of `notes` rendered from `soundfont` in one fluidsynth call, as 1 s mono int16
    clips (one row per note, in order).

    Args:
        soundfont: The `.sf2` file.
        notes: The notes, in slot order.
        work: A scratch folder for the MIDI and WAV files.
    """
    write_midi(notes, os.path.join(work, "notes.mid"))
    render(soundfont, os.path.join(work, "notes.mid"), os.path.join(work, "notes.wav"))
    return cut_clips(os.path.join(work, "notes.wav"), len(notes))


def is_silent(clip: np.ndarray) -> bool:
    """Whether a clip's peak is below `SILENCE_PEAK` (the program sounds nothing at that pitch)."""
    return bool(np.abs(clip.astype(np.int32)).max() < SILENCE_PEAK)


def write_clip(staging: str, split: str, note: Note, clip: np.ndarray, prefix: str = "") -> None:
    """Writes one clip as `staging/split/family/{prefix}{note.file_name}` (16-bit PCM)."""
    folder = os.path.join(staging, split, note.family)
    os.makedirs(folder, exist_ok=True)
    sf.write(os.path.join(folder, prefix + note.file_name), clip, SAMPLE_RATE, subtype="PCM_16")


def replace_folder(staging: str, out_dir: str) -> None:
    """Moves a finished staging folder to `out_dir`, replacing what was there, so a killed build
    never leaves a half-written dataset behind."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)


def build(
    out_dir: str,
    soundfont: str = DEFAULT_SOUNDFONT,
    pitches: dict[str, tuple[int, ...]] | None = None,
    velocities: tuple[int, ...] = (100,),
) -> dict:
    """Renders the dataset into `out_dir` (replaced as a whole) and returns its summary.

    Args:
        out_dir: The audiofolder to write: `{split}/{family}/{program}_p{pitch}_v{velocity}.wav`.
        soundfont: The `.sf2` file (default: Debian's FluidR3 GM).
        pitches: MIDI pitches of each split (default: `DEFAULT_PITCHES`).
        velocities: MIDI velocities of every note.
    """
    notes = plan_notes(pitches or DEFAULT_PITCHES, tuple(velocities))
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".gm-render-") as work:
        clips = render_clips(soundfont, notes, work)
        staging = os.path.join(work, "out")
        counts: dict[str, int] = {}
        skipped = []
        for note, clip in zip(notes, clips, strict=True):
            if is_silent(clip):
                skipped.append(note.file_name.removesuffix(".wav"))
                continue
            write_clip(staging, note.split, note, clip)
            counts[note.split] = counts.get(note.split, 0) + 1
        replace_folder(staging, out_dir)
    return {
        "soundfont": os.path.basename(soundfont),
        "soundfont_sha256": file_digest(soundfont),
        "pitches": {split: list(p) for split, p in (pitches or DEFAULT_PITCHES).items()},
        "velocities": list(velocities),
        "clips": counts,
        "skipped_silent": skipped,
    }


def main() -> None:
    """Command line: render the dataset and print its summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="The audiofolder to write (replaced).")
    parser.add_argument("--soundfont", default=DEFAULT_SOUNDFONT)
    for split, values in DEFAULT_PITCHES.items():
        parser.add_argument(f"--{split}_pitches", type=int, nargs="+", default=list(values))
    parser.add_argument("--velocities", type=int, nargs="+", default=[100])
    args = parser.parse_args()
    pitches = {split: tuple(getattr(args, f"{split}_pitches")) for split in DEFAULT_PITCHES}
    summary = build(args.out, args.soundfont, pitches, tuple(args.velocities))
    print(
        f"{sum(summary['clips'].values())} clips in {args.out}: {summary['clips']}; "
        f"{len(summary['skipped_silent'])} silent notes skipped"
    )


if __name__ == "__main__":
    main()
