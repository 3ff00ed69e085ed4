"""Hostile chat templates and tokenizer metadata (issue 19, item 13): the static audit refuses them before
anything renders, the conformance gate fails on them, and a render that loops anyway is stopped in time."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeready.adapters.llama_cpp_device import RENDER_TIMEOUT_S, LlamaCppDevice, render_template
from edgeready.conformance import check_conformance, failures, read_header
from edgeready.errors import MeasurementError
from edgeready.gates.conformance import Conformance, ConformanceConfig
from edgeready.measurement import Measurement
from edgeready.stats import Interval
from edgeready.template_audit import MAX_TEMPLATE_BYTES, audit_chat_template, errors

# The template: 10^10 iterations, which the sandbox's range() (100,000 items at most) allows.
LOOPING = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"
# The same loops writing nothing, for the render test: 2 s of {{ i }} would pile up ~1 GB of output.
LOOPING_QUIET = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def codes(findings) -> set[str]:
    return {f.code for f in errors(findings)}


def test_looping_template_is_refused_by_the_audit_fast():
    start = time.process_time()
    findings = audit_chat_template(LOOPING)
    assert time.process_time() - start < 0.5
    assert {"range-bound", "nested-loops"} <= codes(findings)
    nested = next(f for f in findings if f.code == "nested-loops")
    assert "10,000,000,000" in nested.message and nested.line == 1


@pytest.mark.parametrize("template", [
    "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",  # each range small
    "{% set xs = range(1000) %}{% for i in xs %}{% for j in xs %}{% endfor %}{% endfor %}",  # through a name
    "{% macro m() %}{% for j in range(1000) %}x{% endfor %}{% endmacro %}"
    "{% for i in range(1000) %}{{ m() }}{% endfor %}",  # through a macro call
])
def test_nested_loops_are_multiplied(template):
    assert "nested-loops" in codes(audit_chat_template(template))


@pytest.mark.parametrize("template", [
    "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ messages['__class__'] }}",
    "{{ messages|attr('__class__') }}",
    "{{ messages._private }}",
])
def test_dunder_and_private_access_is_flagged(template):
    findings = audit_chat_template(template)
    assert codes(findings) == {"private-attribute"}, findings


@pytest.mark.parametrize(("template", "code"), [
    ("{% for i in range(10 ** 6) %}{% endfor %}", "range-bound"),
    ("{{ 10 ** (10 ** 10) }}", "power"),  # computed in C: no signal could stop it
    ("{{ 'x' * 1000000000 }}", "repeat"),
    ("{% macro f(n) %}{% for i in range(10) %}{{ f(n) }}{% endfor %}{% endmacro %}{{ f(1) }}", "recursion"),
    ("".join(f"{{% macro m{i}() %}}{{{{ m{i + 1}() }}}}{{{{ m{i + 1}() }}}}{{% endmacro %}}" for i in range(40))
     + "{% macro m40() %}x{% endmacro %}{{ m0() }}", "macro-calls"),  # 2^40 calls, no loop, no recursion
    ("{% for i in %}", "syntax"),
    ("x" * (MAX_TEMPLATE_BYTES + 1), "template-size"),
    ("{% for i in x %}" * 2000 + "{% endfor %}" * 2000, "nesting"),  # Jinja's own parser recurses too deep
])
def test_other_exhaustion_is_refused(template, code):
    assert code in codes(audit_chat_template(template))


def test_real_templates_pass(smollm_path):
    template = read_header(smollm_path).kv["tokenizer.chat_template"]
    assert "message" in template
    assert errors(audit_chat_template(template)) == []
    # What real tool-calling templates do is at most a warning: ranges over the data, schemas rendered by
    # recursion over the data, loop controls, HuggingFace's generation tag.
    real_patterns = (
        "{% for i in range(messages|length) %}{% if loop.first %}{% continue %}{% endif %}{% endfor %}"
        "{% macro render(o) %}{% for k in o %}{{ render(o[k]) }}{% endfor %}{% endmacro %}{{ render(tools) }}"
        "{% generation %}{{ messages[-1]['content'] }}{% endgeneration %}{{ '-' * 80 }}"
    )
    findings = audit_chat_template(real_patterns)
    assert errors(findings) == [] and {f.code for f in findings} == {"range-unbounded", "recursion"}


def test_special_token_ids_are_checked_against_the_vocabulary():
    findings = audit_chat_template(CHATML, vocab_size=10, special_tokens={"bos": 1, "eos": 12, "padding": -1})
    assert [f.code for f in findings] == ["token-id", "token-id"]
    assert "eos token id 12 is outside the vocabulary of 10 tokens (0..9)" in findings[0].message


# -- conformance ----------------------------------------------------------------------------------


def write_gguf(path: Path, *, template: str | None, eos: int, n_tokens: int = 32) -> Path:
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_file_type(0)  # all F32
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(n_tokens)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(0)
    if template is not None:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_conformance_fails_on_ids_outside_the_vocabulary_and_on_a_looping_template(tmp_path):
    base = write_gguf(tmp_path / "base.gguf", template=CHATML, eos=2)
    good = {c.name: c for c in check_conformance(base, base, None)}
    assert not failures(list(good.values()))
    assert good["chat_template"].detail.startswith("static audit clean")

    bad = write_gguf(tmp_path / "bad.gguf", template=LOOPING, eos=40)
    checks = {c.name: c for c in check_conformance(base, bad, None)}
    assert {c.name for c in failures(list(checks.values()))} == {"special_tokens", "chat_template"}
    assert checks["special_tokens"].detail.startswith("eos token id 40 is outside the vocabulary of 32 tokens")
    assert checks["chat_template"].detail.startswith("error [range-bound] line 1: range() of 100,000 items")
    # A base model without a template gets no template check (the ladder's checks stay what they were).
    plain = write_gguf(tmp_path / "plain.gguf", template=None, eos=2)
    assert "chat_template" not in {c.name for c in check_conformance(plain, plain, None)}


def test_the_conformance_gate_fails_naming_the_finding(tmp_path):
    base = write_gguf(tmp_path / "base.gguf", template=CHATML, eos=2)
    bad = write_gguf(tmp_path / "bad.gguf", template=LOOPING, eos=2)
    structural = [c.__dict__ for c in check_conformance(base, bad, None)]
    m = Measurement(gate="conformance", metric="kld", value=0.0, unit="nats", n=100,
                    interval=Interval(0.0, 0.0, 0.95, "normal"), method="measured", meter="test",
                    details={"structural": structural, "kld_p99": 0.0, "same_top_pct": 100.0, "same_top_stderr": 0.0})
    cfg = ConformanceConfig(max_kld_mean=0.3, max_kld_p99=1.5)
    failed = [c for c in Conformance().judge(m, cfg, None).checks if not c.passed]
    assert [c.name for c in failed] == ["gguf:chat_template"]
    assert "range() of 100,000 items" in failed[0].describe()


# -- rendering --------------------------------------------------------------------------------------


def test_a_looping_render_is_stopped_by_the_time_limit_and_the_outer_alarm_restored():
    """The audit bypassed (render_template renders whatever it is given), the time limit still stops it, and
    puts back the SIGALRM handler and timer that were there before."""
    fired = []

    def outer(signum, frame):
        fired.append(signum)

    old_handler = signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        start = time.perf_counter()
        with pytest.raises(MeasurementError, match=rf"loop\.gguf: rendering its chat template took longer than the "
                                                   rf"limit of {RENDER_TIMEOUT_S:g} s"):
            render_template(LOOPING_QUIET, [("user", "hi")], bos="", eos="", model="loop.gguf")
        assert time.perf_counter() - start < RENDER_TIMEOUT_S + 3
        assert signal.getsignal(signal.SIGALRM) is outer
        assert 50 < signal.getitimer(signal.ITIMER_REAL)[0] <= 60 and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)


def test_a_render_off_the_main_thread_is_not_timed_but_works():
    out: list[str] = []
    worker = threading.Thread(target=lambda: out.append(
        render_template(CHATML, [("user", "hi")], bos="", eos="", model="m.gguf")))
    worker.start()
    worker.join(30)
    assert out == ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"]


def test_the_device_adapter_audits_before_it_renders(smollm_path):
    device = LlamaCppDevice(smollm_path, threads=1, n_ctx=256, prompt_style="chat")
    try:
        assert "<|im_start|>user\nhi<|im_end|>" in device.render_chat([("user", "hi")])
        device._template, device._template_audited = LOOPING, False  # as if the GGUF carried it
        start = time.perf_counter()
        for _ in range(2):  # refused every time it is asked, not only the first
            with pytest.raises(MeasurementError, match=rf"{smollm_path.name}: its chat template is refused by the "
                                                       r"static audit, nothing rendered: error \[range-bound\]"):
                device.render_chat([("user", "hi")])
        assert time.perf_counter() - start < 1.0
    finally:
        device.close()
