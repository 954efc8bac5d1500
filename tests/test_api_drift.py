"""API drift: build the configs and trainers with the argument names the labs use.

transformers, trl, peft and bitsandbytes rename arguments often (``tokenizer=`` became
``processing_class=``; SFT's ``max_seq_length`` became ``max_length``; DPO's ``beta``
moved into ``DPOConfig``). An upgrade that renames one of these fails here first,
with a short error, instead of in the middle of a lab.
"""

import pytest
import torch
from datasets import Dataset

from ftlab import tiny
from ftlab.profile import get_profile


def stack_can_train() -> bool:
    """trl < 1.16 needs Triton (CUDA builds of torch only) inside its trainers' loss code."""
    import trl
    from packaging.version import Version

    return torch.cuda.is_available() or Version(trl.__version__) >= Version("1.16.0")




@pytest.fixture(scope="module")
def tokenizer():
    return tiny.train_tokenizer(["안녕하세요. 무엇을 도와드릴까요?", "공원에 산책을 갔어요."] * 30, vocab_size=350)


@pytest.fixture
def model_and_tokenizer(tokenizer):
    """A fresh random tiny Llama per test (PEFT wraps models in place)."""
    tok = tokenizer
    cfg = tiny.TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(tiny.build_llama_config(cfg, tok)), tok


def lora_config(**overrides):
    from peft import LoraConfig

    kwargs = dict(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                  bias="none", task_type="CAUSAL_LM")
    kwargs.update(overrides)
    return LoraConfig(**kwargs)


def test_lora_config_variants():
    assert lora_config(target_modules="all-linear").target_modules == "all-linear"
    assert lora_config(use_dora=True).use_dora
    assert lora_config(use_rslora=True).use_rslora


def test_bitsandbytes_config_names():
    from transformers import BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant


def test_sft_trainer_with_lora(model_and_tokenizer, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tok = model_and_tokenizer
    rows = [{"messages": [{"role": "user", "content": "안녕하세요?"}, {"role": "assistant", "content": "네, 반갑습니다."}]}] * 8
    args = SFTConfig(output_dir=str(tmp_path), max_length=64, assistant_only_loss=True, packing=False,
                     report_to="none", **get_profile("cpu").training_kwargs(max_steps=2, per_device_train_batch_size=4,
                                                                                  learning_rate=1e-3))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, peft_config=lora_config())
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"][0]
    assert (labels == -100).any() and (labels != -100).any()  # loss on the answer only
    if stack_can_train():
        assert trainer.train().global_step == 2


def test_sft_completion_only_on_prompt_completion(model_and_tokenizer, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tok = model_and_tokenizer
    rows = [{"prompt": "### 지시:\n인사해 주세요.\n\n### 응답:\n", "completion": "안녕하세요."}] * 4
    args = SFTConfig(output_dir=str(tmp_path), max_length=64, completion_only_loss=True, report_to="none",
                     max_steps=1, per_device_train_batch_size=4, use_cpu=True, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora_config())
    if stack_can_train():
        assert trainer.train().global_step == 1


def test_dpo_trainer_with_peft_and_no_reference(model_and_tokenizer, tmp_path):
    from trl import DPOConfig, DPOTrainer

    model, tok = model_and_tokenizer
    rows = [{"prompt": [{"role": "user", "content": "예약할 수 있나요?"}],
             "chosen": [{"role": "assistant", "content": "네, 기꺼이 도와드릴게요."}],
             "rejected": [{"role": "assistant", "content": "안 돼요."}]}] * 8
    args = DPOConfig(output_dir=str(tmp_path), beta=0.1, loss_type=["sigmoid"], max_length=64, report_to="none",
                     max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, use_cpu=True,
                     logging_steps=1, disable_tqdm=True)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, peft_config=lora_config())
    if not stack_can_train():
        pytest.skip("constructed; trl < 1.16 trains only on CUDA torch")
    trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= logged


def test_prepare_for_kbit_training_exists():
    from peft import get_peft_model, prepare_model_for_kbit_training  # noqa: F401


def test_gradient_checkpointing_argument_still_works(tmp_path):
    """profile.training_kwargs passes ``gradient_checkpointing``; transformers 5.23 only deprecates it."""
    import warnings

    from transformers import TrainingArguments

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = TrainingArguments(output_dir=str(tmp_path), gradient_checkpointing=True, use_cpu=True, report_to="none")
    assert args.gradient_checkpointing
