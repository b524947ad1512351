"""WavLM: its attention is rebuilt (module calls, kept-head index) before masking; the rebuilt
block must compute exactly what transformers' block computes."""

import copy

import torch
from tiny_models import tiny_wavlm

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.runtime import KeepWhatWavLMAttention, use_keepwhat_wavlm_attention


def test_rebuilt_attention_computes_the_stock_attention():
    stock = tiny_wavlm(do_stable_layer_norm=True, feat_extract_norm="layer")
    rebuilt = copy.deepcopy(stock)
    use_keepwhat_wavlm_attention(rebuilt)
    assert all(
        type(layer.attention) is KeepWhatWavLMAttention for layer in rebuilt.wavlm.encoder.layers
    )
    inputs = torch.randn(2, 1600)
    padding = torch.ones(2, 1600, dtype=torch.long)
    padding[1, 1000:] = 0  # the second clip is shorter: padded keys must be ignored
    with torch.no_grad():
        for mask in (None, padding):
            expected = stock(inputs, attention_mask=mask).logits
            assert (rebuilt(inputs, attention_mask=mask).logits - expected).abs().max() <= 1e-5


def test_pruned_wavlm_with_padding_equals_masked():
    mm = get_mask_model(tiny_wavlm(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("wavlm.encoder.layers.0.heads", [1, 3])  # layer 0 computes the shared bias
    mm.set_kept("wavlm.encoder.layers.1.heads", [])
    mm.set_kept("wavlm.encoder.layers.2.heads", [2])
    mm.eval()
    inputs = torch.randn(2, 1600)
    padding = torch.ones(2, 1600, dtype=torch.long)
    padding[0, 1200:] = 0
    with torch.no_grad():
        pruned = mm.prune()
        masked = mm(inputs, attention_mask=padding).logits
        assert (pruned(inputs, attention_mask=padding).logits - masked).abs().max() <= 1e-5
    assert pruned.wavlm.encoder.layers[2].attention.kept_heads.tolist() == [2]
    # Layer 0's bias table serves every layer: all heads' columns stay.
    assert pruned.wavlm.encoder.layers[0].attention.rel_attn_embed.weight.shape[1] == 4
