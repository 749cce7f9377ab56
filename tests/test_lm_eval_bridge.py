"""The lm-eval bridge: our model's answers to lm-eval's three request types against direct
computation, the local tasks end to end through lm-eval offline, and a Hugging Face checkpoint
from a local folder through lm-eval's own `hf` model."""

import math

import pytest
import torch
from lm_eval.api.instance import Instance

from evals import lm_eval_bridge as bridge
from reproductions.transformer import lm


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return lm.build(lm.Config(n_layer=1, n_head=2, n_embd=32, block_size=24)).eval()


def _req(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def _logprobs(model, text: str) -> torch.Tensor:
    """log p(byte_t | byte_<t) for every byte after the first, all in one window."""
    ids = torch.tensor([list(text.encode())])
    return torch.log_softmax(model(ids[:, :-1])[0][0], -1).gather(-1, ids[0, 1:, None])[:, 0]


def test_loglikelihood_matches_direct_computation(model):
    ours = bridge.ReproLM(model)
    (ll, greedy), = ours.loglikelihood([_req("loglikelihood", "def f", "(x):")])
    assert ll == pytest.approx(_logprobs(model, "def f(x):")[-4:].sum().item(), abs=1e-4)
    ids = list(b"import o")
    best = model(torch.tensor([ids]))[0][0, -1].argmax().item()
    (_, is_greedy), = ours.loglikelihood([_req("loglikelihood", "import o", bytes([best]).decode("latin-1"))])
    assert is_greedy or best > 127  # a non-ASCII argmax byte cannot be written as one character


def test_rolling_loglikelihood_covers_every_token_once(model):
    ours = bridge.ReproLM(model)
    short = "x = 1\n"
    (ll,), = [ours.loglikelihood_rolling([_req("loglikelihood_rolling", short)])]
    assert ll == pytest.approx(_logprobs(model, "\n" + short).sum().item(), abs=1e-4)
    long = "for i in range(10):\n    print(i)\n" * 2  # longer than the 24-byte block: disjoint windows
    (ll_long,) = ours.loglikelihood_rolling([_req("loglikelihood_rolling", long)])
    ids = [10] + list(long.encode())  # the newline prefix, then the text
    expected = 0.0
    for p0 in range(1, len(ids), 24):  # predict ids[p0:p1], each window as long as the block allows
        p1 = min(p0 + 24, len(ids))
        window = torch.tensor([ids[max(0, p1 - 25):p1]])
        logp = torch.log_softmax(model(window[:, :-1])[0][0], -1).gather(-1, window[0, 1:, None])[:, 0]
        expected += logp[-(p1 - p0):].sum().item()
    assert ll_long == pytest.approx(expected, abs=1e-3)


def test_generate_until_stops_at_the_stop_string(model):
    ours = bridge.ReproLM(model)
    (text,) = ours.generate_until([_req("generate_until", "def ", {"until": ["\n"], "max_gen_toks": 8})])
    full = model.generate(torch.tensor([list(b"def ")]), 8)[0, 4:].tolist()
    decoded = bytes(full).decode("utf-8", errors="replace")
    assert text == decoded.split("\n")[0] and "\n" not in text


def test_local_tasks_through_lm_eval_offline(model):
    results = bridge.evaluate(bridge.ReproLM(model), ["repro_python_mc", "repro_python_rolling", "repro_python_complete"])
    metrics = bridge.flat_metrics(results)
    assert 0.0 <= metrics["repro_python_mc_acc"] <= 1.0 and 0.0 <= metrics["repro_python_complete_exact_match"] <= 1.0
    assert len(results["samples"]["repro_python_mc"]) == 16
    # lm-eval's bits per byte agrees with our own rolling log-likelihoods over the same texts
    docs = [s["doc"]["text"] for s in results["samples"]["repro_python_rolling"]]
    lls = bridge.ReproLM(model).loglikelihood_rolling([_req("loglikelihood_rolling", d) for d in docs])
    bpb = -sum(lls) / sum(len(d.encode()) for d in docs) / math.log(2)
    assert metrics["repro_python_rolling_bits_per_byte"] == pytest.approx(bpb, rel=1e-4)
    with pytest.raises(ValueError, match="unknown local"):
        bridge.local_tasks(["mmlu"])


def test_hugging_face_checkpoint_from_a_local_folder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["def f(x):\n    return x\n"] * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(tmp_path)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                               eos_token_id=fast.eos_token_id)).save_pretrained(tmp_path)
    hf = bridge.hf_model(str(tmp_path), batch_size=1, device="cpu")
    (ll, _), = hf.loglikelihood([_req("loglikelihood", "def f", "(x):")])
    assert math.isfinite(ll) and ll < 0
    with pytest.raises(FileNotFoundError, match="config.json"):
        bridge.hf_model(str(tmp_path / "nothing"))
