"""GGUF footprint from the tensor table (the gguf package), checked against the file itself."""

import pytest

from edgeready.config_errors import ConfigError
from edgeready.gguf_info import read_gguf


def test_gemma_footprint_and_kv_cache(gemma_path):
    s = read_gguf(gemma_path)
    assert s.architecture == "gemma3" and s.block_count == 18
    # The tensor data is most of the file; the rest is the header and the 262k-token vocabulary.
    assert 0.9 * s.file_bytes < s.weights_bytes < s.file_bytes
    assert s.tensor_count == 236
    assert set(s.tensor_types) >= {"Q4_K", "Q6_K", "F32"}
    # 18 layers x 1 KV head x (256 + 256) dims x 2 bytes x 2048 positions = 36 MiB.
    assert s.kv_cache_bytes(2048) == 18 * 1 * 512 * 2 * 2048
    assert s.kv_cache_bytes(4096) == 2 * s.kv_cache_bytes(2048)


def test_smollm_footprint(smollm_path):
    s = read_gguf(smollm_path)
    assert s.architecture == "llama"
    assert 0.9 * s.file_bytes < s.weights_bytes < s.file_bytes
    assert s.head_count_kv == 3 and s.block_count == 30


def test_truncated_gguf_is_a_clear_error(gemma_path, tmp_path):
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(gemma_path.read_bytes()[:100_000])
    with pytest.raises(ConfigError, match=r"truncated\.gguf: not a readable GGUF file"):
        read_gguf(bad)


def test_not_a_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "text.gguf"
    bad.write_text("hello")
    with pytest.raises(ConfigError, match="not a readable GGUF file"):
        read_gguf(bad)
