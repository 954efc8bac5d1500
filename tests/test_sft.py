"""ftlab.sft: templates, pairs, answer NLL, generation, mixing, one trl run (tiny random models)."""

import pytest
import torch

from ftlab import sft, tiny


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["공유기를 다시 켜 보세요.", "### 지시:\n질문에 답하세요.\n\n### 응답:\n네.", "<|user|>\n안녕<|end|>"] * 40
    return tiny.train_tokenizer(texts, vocab_size=400)


@pytest.fixture
def model(tokenizer):
    from transformers import LlamaForCausalLM

    cfg = tiny.TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny.build_llama_config(cfg, tokenizer)).eval()


ROWS = [
    {"id": "a", "fact_id": "f1", "instruction": "공유기가 안 켜져요.", "input": "", "output": "전원을 확인하세요."},
    {"id": "b", "fact_id": "f2", "instruction": "질문에 답하세요.", "input": "프린터", "output": "용지를 넣으세요."},
]


def simple_template(row):
    return f"Q: {row['instruction']} {row['input']}\nA: "


def test_chat_messages_appends_input():
    assert sft.chat_messages(ROWS[1])[0]["content"] == "질문에 답하세요.\n프린터"
    assert sft.chat_messages(ROWS[0])[1] == {"role": "assistant", "content": "전원을 확인하세요."}


def test_chat_pairs_match_the_chat_template(tokenizer):
    pairs = sft.to_pairs(ROWS, "chat", tokenizer)
    assert pairs[0]["prompt"] == "<|user|>\n공유기가 안 켜져요.<|end|>\n<|assistant|>\n"
    assert pairs[0]["completion"] == "전원을 확인하세요.<|end|>"
    full = tokenizer.apply_chat_template(sft.chat_messages(ROWS[0]), tokenize=False)
    assert full.startswith(pairs[0]["prompt"] + pairs[0]["completion"])


def test_callable_template_and_errors(tokenizer):
    assert sft.to_pairs(ROWS, simple_template, tokenizer)[1]["prompt"] == "Q: 질문에 답하세요. 프린터\nA: "
    with pytest.raises(ValueError, match="unknown template"):
        sft.prompt_fn("alpaca")
    with pytest.raises(ValueError, match="tokenizer"):
        sft.prompt_fn("chat")


def test_instruction_template_uses_ftlab_data(tokenizer):
    data = pytest.importorskip("ftlab.data")
    prompt = sft.prompt_fn("instruction")(ROWS[1])
    assert prompt == data.format_instruction_prompt(ROWS[1], with_response=False)
    assert "### 응답:" in prompt and not prompt.endswith("용지를 넣으세요.")


def test_prompt_completion_dataset_passes_rendered_pairs_through(tokenizer):
    ds = sft.prompt_completion(ROWS, "chat", tokenizer)
    assert ds.column_names == ["prompt", "completion"] and len(ds) == 2
    pairs = [{"prompt": "p", "completion": "c", "extra": 1}]
    assert sft.prompt_completion(pairs)[0] == {"prompt": "p", "completion": "c"}
    with pytest.raises(ValueError, match="template"):
        sft.prompt_completion(ROWS)


def test_answer_nll_matches_model_loss_and_ignores_padding(model, tokenizer):
    pairs = sft.to_pairs(ROWS, "chat", tokenizer)
    ids, start = sft._encode_pair(tokenizer, pairs[0])
    labels = torch.tensor([[-100] * start + ids[start:]])
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
    assert sft.answer_nll(model, tokenizer, pairs[:1]) == pytest.approx(expected, rel=1e-5)
    batched, single = sft.answer_nll(model, tokenizer, pairs, 2), sft.answer_nll(model, tokenizer, pairs, 1)
    assert batched == pytest.approx(single, rel=1e-5)
    assert 0 < batched < 2 * torch.log(torch.tensor(len(tokenizer))).item()


def test_generate_answers_batched_equals_one_by_one(model, tokenizer):
    prompts = [p["prompt"] for p in sft.to_pairs(ROWS, "chat", tokenizer)]
    batched = sft.generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    single = [sft.generate_answers(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single and len(batched) == 2
    assert tokenizer.padding_side == "right"  # restored


def test_fact_scores_uses_fact_correct(model, tokenizer, monkeypatch):
    ev = pytest.importorskip("ftlab.eval")
    monkeypatch.setattr(ev, "fact_correct", lambda answer, fact_id: fact_id == "f1")
    scores = sft.fact_scores(model, tokenizer, ROWS, "chat", max_new_tokens=3)
    assert scores["correct"] == [True, False] and scores["accuracy"] == 0.5 and len(scores["answers"]) == 2


def test_mix_at_ratio_counts_order_and_determinism():
    domain, replay = [f"d{i}" for i in range(10)], [f"g{i}" for i in range(30)]
    mixed = sft.mix_at_ratio(domain, replay, 0.8, size=50, seed=1)
    assert len(mixed) == 50 and sum(x.startswith("g") for x in mixed) == 40
    assert sorted(x for x in mixed if x.startswith("d")) == sorted(domain)  # every domain item exactly once
    assert mixed == sft.mix_at_ratio(domain, replay, 0.8, size=50, seed=1)
    assert mixed != sft.mix_at_ratio(domain, replay, 0.8, size=50, seed=2)
    many = sft.mix_at_ratio(domain, replay, 0.0, size=25)
    assert all(many.count(d) in (2, 3) for d in domain)  # a full pass before any repeat
    with pytest.raises(ValueError, match="between 0 and 1"):
        sft.mix_at_ratio(domain, replay, 1.5, size=5)
    with pytest.raises(ValueError, match="empty"):
        sft.mix_at_ratio(domain, [], 0.5, size=4)


def test_log_series():
    log = [{"loss": 2.0, "step": 10}, {"eval_loss": 1.5, "step": 10}, {"loss": 1.0, "step": 20}]
    assert sft.log_series(log, "loss") == {"step": [10, 20], "value": [2.0, 1.0]}
    assert sft.log_series(log, "eval_loss") == {"step": [10], "value": [1.5]}


def test_train_sft_completion_only_masks_prompt(model, tokenizer, tmp_path):
    from trl import SFTConfig

    train = sft.prompt_completion(ROWS * 4, "chat", tokenizer)
    args = SFTConfig(output_dir=str(tmp_path), max_length=64, completion_only_loss=True, report_to="none",
                     max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3, use_cpu=True,
                     logging_steps=1, eval_strategy="steps", eval_steps=3, disable_tqdm=True, save_strategy="no")
    before = sft.answer_nll(model, tokenizer, sft.to_pairs(ROWS, "chat", tokenizer))
    trainer = sft.train_sft(model, tokenizer, args, train, eval_dataset=train)
    assert trainer.state.global_step == 3 and not model.training
    assert sft.log_series(trainer.state.log_history, "eval_loss")["step"] == [3]
    assert sft.answer_nll(model, tokenizer, sft.to_pairs(ROWS, "chat", tokenizer)) < before
    batch = next(iter(trainer.get_train_dataloader()))
    prompt_len = len(tokenizer(sft.to_pairs(ROWS, "chat", tokenizer)[0]["prompt"])["input_ids"])
    labels = batch["labels"]
    assert (labels[:, :3] == -100).all() and (labels != -100).any() and prompt_len > 3


def test_stop_after_keeps_the_full_schedule_and_measure_at_records(model, tokenizer, tmp_path):
    from trl import SFTConfig

    train = sft.prompt_completion(ROWS * 4, "chat", tokenizer)
    args = SFTConfig(output_dir=str(tmp_path), max_length=64, completion_only_loss=True, report_to="none",
                     max_steps=10, per_device_train_batch_size=4, learning_rate=1e-3, lr_scheduler_type="linear",
                     use_cpu=True, logging_steps=1, disable_tqdm=True, save_strategy="no")
    seen = {}
    trainer = sft.train_sft(model, tokenizer, args, train,
                            callbacks=[sft.stop_after(2), sft.measure_at(2, lambda m: m.training, seen)])
    assert trainer.state.global_step == 2
    assert seen == {2: False}  # measured in eval mode
    lrs = sft.log_series(trainer.state.log_history, "learning_rate")["value"]
    assert lrs == pytest.approx([1e-3, 9e-4])  # linear decay over max_steps=10 (over 2 steps it would be 5e-4)


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.2])
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stopping_step_matches_the_transformers_callback(patience, threshold):
    from types import SimpleNamespace

    from transformers import EarlyStoppingCallback, TrainerControl

    values = [5.0, 3.0, 2.0, 1.9, 1.85, 1.95, 1.84, 1.83, 2.5, 2.6, 1.0]
    steps = [10 * (i + 1) for i in range(len(values))]
    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    args = SimpleNamespace(metric_for_best_model="eval_loss", greater_is_better=False)
    state = SimpleNamespace(best_metric=None)
    expected = None
    for step, value in zip(steps, values):
        control = TrainerControl()
        callback.on_evaluate(args, state, control, metrics={"eval_loss": value})
        if state.best_metric is None or value < state.best_metric:  # Trainer._determine_best_metric, after the callback
            state.best_metric = value
        if control.should_training_stop:
            expected = step
            break
    assert sft.early_stopping_step(steps, values, patience, threshold) == expected


def test_early_stopping_step_edge_cases():
    assert sft.early_stopping_step([1, 2, 3], [3.0, 2.0, 1.0], patience=1) is None
    assert sft.early_stopping_step([1, 2], [1.0, 1.0], patience=1) == 2
    with pytest.raises(ValueError, match="patience"):
        sft.early_stopping_step([1], [1.0], patience=0)
    with pytest.raises(ValueError, match="values"):
        sft.early_stopping_step([1, 2], [1.0], patience=1)


def test_lab05_gpu_path_lora_with_two_eval_sets_and_early_stopping(model, tokenizer, tmp_path):
    """The GPU profiles run lab 05's main recipe through a LoraConfig: check that combination on CPU."""
    from peft import LoraConfig, PeftModel
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig

    train = sft.prompt_completion(ROWS * 8, "chat", tokenizer)
    evals = {"domain": sft.prompt_completion(ROWS, "chat", tokenizer), "general": sft.prompt_completion(ROWS[:1], "chat", tokenizer)}
    args = SFTConfig(output_dir=str(tmp_path), max_length=64, completion_only_loss=True, report_to="none", max_steps=4,
                     per_device_train_batch_size=4, learning_rate=1e-2, use_cpu=True, logging_steps=1, disable_tqdm=True,
                     eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2, save_total_limit=1,
                     load_best_model_at_end=True, metric_for_best_model="eval_domain_loss")
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    trainer = sft.train_sft(model, tokenizer, args, train, evals, callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
                            peft_config=lora)
    assert isinstance(trainer.model, PeftModel)
    domain = sft.log_series(trainer.state.log_history, "eval_domain_loss")
    assert domain["step"] == [2, 4] and sft.log_series(trainer.state.log_history, "eval_general_loss")["step"] == [2, 4]
    best = min(domain["value"])
    assert trainer.state.best_metric == pytest.approx(best)
    kept = sft.answer_nll(trainer.model, tokenizer, sft.to_pairs(ROWS, "chat", tokenizer))
    assert kept == pytest.approx(best, abs=1e-3)  # the best checkpoint was loaded back
