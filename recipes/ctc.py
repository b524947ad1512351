"""Speech recognition with CTC for wav2vec2-family models: WER and CER.

The model's own CTC head (`lm_head`, a linear layer over the vocabulary) is the task head that
trains with the masks; the paper used a BiLSTM + CTC head instead.

    python recipes/ctc.py --model_name_or_path facebook/wav2vec2-base-960h --preset librispeech \
        --target_sparsity 0.25 --output_dir out/asr --max_steps 20000
"""

from dataclasses import dataclass

import numpy as np
from datasets import Audio
from transformers import AutoConfig, AutoModelForCTC, AutoProcessor

from hf_keepwhat.tasks import Task, decoded_waveform, load_metric, main, require_column

WER = load_metric("wer")
CER = load_metric("cer")
PROCESSOR = {}  # filled by prepare(): compute_metrics decodes with it


def prepare(splits, feature_extractor, model_path, data_args, config):
    """Featurizes every split and tokenizes transcripts with the model's own processor."""
    processor = PROCESSOR["processor"] = AutoProcessor.from_pretrained(model_path)
    rate = processor.feature_extractor.sampling_rate
    input_name = processor.feature_extractor.model_input_names[0]

    def encode(split):
        def process(batch, indices):
            warned = {}
            waves = [
                decoded_waveform(a, rate, f"{split} example {i}", warned)
                for a, i in zip(batch[data_args.audio_column], indices, strict=True)
            ]
            out = {
                input_name: list(processor.feature_extractor(waves, sampling_rate=rate)[input_name])
            }
            texts = batch[data_args.text_column]
            out["labels"] = processor.tokenizer(texts).input_ids
            return out

        return process

    for split_name, split in splits.items():
        where = f"{split_name} split"
        require_column(
            split.column_names, data_args.text_column, "transcript", "--text_column", where
        )
    # Decoded file by file in `encode`, so that a bad file is named, not a decoder traceback.
    undecoded = Audio(decode=False)
    featurized = {
        name: split.cast_column(data_args.audio_column, undecoded).map(
            encode(name), batched=True, with_indices=True, remove_columns=split.column_names
        )
        for name, split in splits.items()
    }
    tokenizer = processor.tokenizer
    model_kwargs = {"ctc_loss_reduction": "mean"}
    architectures = AutoConfig.from_pretrained(model_path).architectures or []
    if not any(name.endswith("ForCTC") for name in architectures):
        # A bare pretrained encoder: its new CTC head spans the tokenizer's vocabulary.
        model_kwargs.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    return featurized, model_kwargs, CTCCollator(processor)


@dataclass
class CTCCollator:
    """Pads audio with the feature extractor and transcripts with the tokenizer (pad -> -100)."""

    processor: object

    @property
    def feature_extractor(self):
        return self.processor.feature_extractor

    def __call__(self, examples):
        input_name = self.feature_extractor.model_input_names[0]
        audio = [{input_name: e[input_name]} for e in examples]
        batch = dict(self.feature_extractor.pad(audio, return_tensors="pt"))
        batch[input_name] = batch[input_name].float()
        if "labels" in examples[0]:
            labels = self.processor.tokenizer.pad(
                {"input_ids": [e["labels"] for e in examples]}, return_tensors="pt"
            )
            ids = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
            batch["labels"] = ids
        return batch


def compute_metrics(prediction):
    """WER and CER of greedy CTC decoding."""
    tokenizer = PROCESSOR["processor"].tokenizer
    predicted = np.argmax(prediction.predictions, axis=-1)
    labels = np.where(prediction.label_ids == -100, tokenizer.pad_token_id, prediction.label_ids)
    hypotheses = tokenizer.batch_decode(predicted)
    references = tokenizer.batch_decode(labels, group_tokens=False)
    return {
        **WER.compute(predictions=hypotheses, references=references),
        **CER.compute(predictions=hypotheses, references=references),
    }


TASK = Task(
    name="speech recognition (CTC)",
    auto_class=AutoModelForCTC,
    metric="wer",
    prepare=prepare,
    compute_metrics=compute_metrics,
    card_task="speech recognition",
    greater_is_better=False,
)

if __name__ == "__main__":
    main(TASK)
