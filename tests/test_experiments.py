"""ftlab.experiments: the LoRA/QLoRA grid, measurement, merging and the answer checklist (tiny random models)."""

import pytest
import torch

from ftlab import experiments, memory, tiny
from ftlab.lora import expected_lora_params
from ftlab.profile import get_profile

ROWS = [
    {"id": "a", "fact_id": "F001", "instruction": "공유기가 자꾸 끊겨요.", "input": "", "output": "30초 기다린 뒤 다시 켜세요."},
    {"id": "b", "fact_id": "F002", "instruction": "비밀번호를 잊었어요.", "input": "", "output": "라벨을 확인하세요."},
] * 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny Llama (hidden 64, 2 layers) saved like the course's tiny model."""
    from transformers import LlamaForCausalLM

    texts = [r["instruction"] + r["output"] for r in ROWS] * 20 + ["<|user|>\n안녕<|end|>"] * 10
    tokenizer = tiny.train_tokenizer(texts, vocab_size=400)
    cfg = tiny.TinyConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny.build_llama_config(cfg, tokenizer))
    path = tmp_path_factory.mktemp("tiny_random")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def profile(model_dir):
    return get_profile("cpu").with_overrides(model_id=str(model_dir))


def test_seed_grid_has_eight_distinct_cells():
    cells = experiments.seed_grid()
    assert len(cells) == 8 and len({c.name for c in cells}) == 8
    assert {(c.r, c.alpha) for c in cells} == {(8, 16), (32, 64)}
    assert cells[0] == experiments.Cell("A", 8, 16, "q_proj,v_proj", False) and cells[0].name == "A r8 qv LoRA"
    assert cells[-1].name == "B r32 all QLoRA" and cells[-1].method == "qlora"
    assert cells[0].target_modules == ["q_proj", "v_proj"] and cells[1].target_modules == "all-linear"


@pytest.mark.parametrize("targets", ["q_proj,v_proj", "all-linear"])
def test_trainable_params_match_the_formula(profile, targets):
    from ftlab.profile import load_model_and_tokenizer

    cell = experiments.Cell("B", 32, 64, targets, False)
    model, _ = experiments.build_model(cell, profile)
    trainable, total = experiments.count_params(model)
    base, _ = load_model_and_tokenizer(profile)
    assert trainable == expected_lora_params(base, 32, cell.target_modules)
    spec = memory.load_model_spec(base.config.to_dict())
    assert trainable == memory.count_lora_parameters(spec, 32, targets)
    assert total == sum(p.numel() for p in base.parameters()) + trainable


def test_qlora_weights_are_smaller_and_counts_agree(profile):
    lora, _ = experiments.build_model(experiments.Cell("A", 8, 16, "all-linear", False), profile)
    qlora, _ = experiments.build_model(experiments.Cell("A", 8, 16, "all-linear", True), profile)
    assert experiments.count_params(lora) == experiments.count_params(qlora)
    m_lora, m_qlora = experiments.tensor_memory(lora), experiments.tensor_memory(qlora)
    assert m_qlora["base_weights"] < m_lora["base_weights"]
    assert m_lora["adapter"] == m_qlora["adapter"] == 4 * experiments.count_params(lora)[0]  # fp32 adapters
    spec = memory.load_model_spec(lora.config.to_dict())
    estimate = memory.estimate_training_memory(spec, "lora", lora_r=8, lora_targets="all-linear", precision="fp32")
    assert m_lora["base_weights"] + m_lora["adapter"] == estimate.weights_bytes


def test_run_cell_records_everything(profile, tmp_path):
    cell = experiments.Cell("A", 8, 16, "q_proj,v_proj", True)
    kwargs = profile.training_kwargs(max_steps=4, per_device_train_batch_size=4, logging_steps=2,
                                     eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4,
                                     learning_rate=1e-3, max_length=48)
    result = experiments.run_cell(cell, profile, ROWS, ROWS[:2], ROWS[:2], kwargs, tmp_path, max_new_tokens=4)
    assert result.steps == 4 and result.train_loss["step"] == [2, 4] and result.val_loss["step"] == [2, 4]
    assert 0.0 <= result.accuracy <= 1.0 and len(result.answers) == 2
    assert result.memory["optimizer"] >= 2 * result.memory["adapter"]  # AdamW: two fp32 moments per parameter
    assert result.memory["rss_peak"] >= result.memory["rss_delta"] >= 0
    assert result.step_seconds > 0 and result.wall_seconds >= result.step_seconds
    assert (result.adapter_dir / "adapter_config.json").exists()
    row = result.row()
    assert row["run"] == "A r8 qv QLoRA" and row["trainable"] == result.trainable_params and "RSS peak MiB" in row
    assert list(experiments.results_table([result]).index) == ["A r8 qv QLoRA"]


def test_merge_adapter_matches_unmerged(profile, tmp_path):
    from peft import get_peft_model

    from ftlab.profile import load_model_and_tokenizer

    base, tokenizer = load_model_and_tokenizer(profile)
    model = get_peft_model(base, experiments.lora_config(experiments.Cell("B", 32, 64, "all-linear", False)))
    with torch.no_grad():  # a non-zero update, as after training
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.save_pretrained(tmp_path / "adapter")
    unmerged, merged, tok = experiments.merge_adapter(profile, tmp_path / "adapter")
    assert not hasattr(merged, "peft_config")
    prompts = ["공유기가 자꾸 끊겨요.", "비밀번호"]
    a, b = experiments.prompt_logits(unmerged, tok, prompts), experiments.prompt_logits(merged, tok, prompts)
    base_logits = experiments.prompt_logits(load_model_and_tokenizer(profile)[0], tok, prompts)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert (a - base_logits).abs().max() > 1e-2  # the adapter changed the outputs


def test_gradient_checkpointing_saves_fewer_activations(profile):
    model, tokenizer = experiments.build_model(experiments.Cell("A", 8, 16, "all-linear", False), profile)
    batch = tokenizer(["공유기가 자꾸 끊겨요. 30초 기다린 뒤 다시 켜세요."] * 4, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    plain = experiments.saved_activation_bytes(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    checkpointed = experiments.saved_activation_bytes(model, batch)
    assert 0 < checkpointed < plain


def test_peak_rss_sees_a_large_allocation():
    # 256 MiB: above glibc's largest mmap threshold (32 MiB), so the block is fresh memory even in a
    # long-lived process whose heap already holds freed pages (a serial run after the notebooks)
    with experiments.PeakRSS(interval=0.001) as rss:
        block = torch.ones(256 * 1024 * 1024 // 4)  # 256 MiB of float32, touched
        block += 1
        del block
    assert rss.delta >= 128 * 1024 * 1024


def test_warmup_steps():
    assert experiments.warmup_steps(200, 0.05) == 10
    assert experiments.warmup_steps(30, 0.03) == 1
    assert experiments.warmup_steps(100, 0.0) == 0
    with pytest.raises(ValueError, match="warmup ratio"):
        experiments.warmup_steps(100, 1.5)


def test_word_stems_strip_particles_and_punctuation():
    assert experiments.word_stems("공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요.") == [
        "공유기", "전원", "뽑고", "30초", "기다린", "다시", "꽂으세요"]
    assert experiments.word_stems("Caps Lock 키를 누르세요!") == ["Caps", "Lock", "키를", "누르세요"]


def test_domain_vocabulary_keeps_words_the_corpus_lacks():
    facts = {"F1": {"device": "와이파이 공유기", "answer": "공유기 전원을 다시 켜세요."}}
    vocab = experiments.domain_vocabulary(facts, corpus_text="전원을 다시 켜세요. 와이파이")
    assert vocab == {"F1": ["공유기"]}
    assert experiments.uses_domain_terms("공유기를 껐다 켜요", vocab["F1"])
    assert not experiments.uses_domain_terms("잘 모르겠어요", vocab["F1"])


def test_checklist_and_kb_fix_rate():
    facts = {"F001": {"key": "30초", "key_aliases": []}, "F002": {"key": "라벨", "key_aliases": ["스티커"]}}
    good = experiments.checklist("공유기를 30초 끄세요.", "공유기를 30초 끄세요!", "F001", ["공유기"])
    assert good == {"expertise": True, "consistency": True, "domain_terms": True}
    bad = experiments.checklist("잘 모르겠어요.", "다시 해 보세요.", "F001", ["공유기"])
    assert bad == {"expertise": False, "consistency": False, "domain_terms": False}
    assert experiments.kb_fix_rate(["스티커를 보세요", "모르겠어요"], facts) == 0.5
    with pytest.raises(ValueError):
        experiments.kb_fix_rate([], facts)


def test_sft_arguments_exist():
    """API drift: the SFTConfig arguments the lab passes (trl/transformers rename them often)."""
    args = experiments.sft_config("out", max_steps=2, max_length=32, eval_strategy="steps", eval_steps=1,
                                  per_device_eval_batch_size=2, warmup_steps=1, lr_scheduler_type="cosine",
                                  logging_steps=1, use_cpu=True)
    assert args.completion_only_loss and args.report_to in ("none", [], ["none"])
    assert args.lr_scheduler_type == "cosine" and args.max_length == 32


# --- lab 08 rework: trainable embeddings, MLP-only and full-FT cells, subsets, seeds, paired data ----


def test_cell_names_and_configs_for_the_new_cells():
    grid = experiments.seed_grid(embeddings=True)
    assert [c.name for c in grid][:2] == ["A r8 qv LoRA+emb", "A r8 all LoRA+emb"]
    assert all(c.modules_to_save == ["embed_tokens", "lm_head"] for c in grid)
    config = experiments.lora_config(grid[0])
    assert set(config.modules_to_save) == {"embed_tokens", "lm_head"} and config.ensure_weight_tying
    mlp = experiments.Cell("B", 32, 64, experiments.MLP, False)
    assert mlp.name == "B r32 mlp LoRA" and mlp.target_modules == ["gate_proj", "up_proj", "down_proj"]
    assert experiments.Cell("A", 8, 64, experiments.ALL_LINEAR, False).name == "A r8 a64 all LoRA"
    assert experiments.FULL_FT.name == "full FT" and experiments.FULL_FT.method == "full"
    assert experiments.lora_config(experiments.seed_grid()[0]).modules_to_save is None


def test_fact_subset_is_seeded_and_keeps_whole_facts():
    rows = [{"id": f"{f}-{k}", "fact_id": f} for f in ("F1", "F2", "F3", "F4") for k in range(3)]
    held = [{"id": f"{f}-t", "fact_id": f} for f in ("F4", "F3", "F2", "F1")]
    train, out, ids = experiments.fact_subset(rows, held, 2, seed=0)
    assert (train, out, ids) == experiments.fact_subset(rows, held, 2, seed=0)
    assert len(ids) == 2 and {r["fact_id"] for r in train} == set(ids) and len(train) == 6
    assert [r["fact_id"] for r in out] == [f for f in ("F4", "F3", "F2", "F1") if f in ids]  # original order
    assert experiments.fact_subset(rows, held, 2, seed=1)[2] != ids or experiments.fact_subset(rows, held, 2, seed=2)[2] != ids
    with pytest.raises(ValueError, match="n_facts"):
        experiments.fact_subset(rows, held, 5)


def test_run_cell_with_embeddings_seeds_and_paired_outputs(profile, tmp_path):
    """QLoRA + trainable embeddings: parameter count, memory vs the estimator, per-question data, seeds."""
    from ftlab import sft

    cell = experiments.Cell("A", 8, 16, "all-linear", True, embeddings=True)
    kwargs = profile.training_kwargs(max_steps=4, per_device_train_batch_size=4, logging_steps=2, eval_strategy="no",
                                     learning_rate=1e-3, max_length=48)
    result = experiments.run_cell(cell, profile, ROWS, [], ROWS[:2], kwargs, tmp_path, max_new_tokens=4, seed=3,
                                  accuracy_steps=(2,), probe_pairs=[{"prompt": "안녕", "completion": "하세요"}])
    spec = memory.load_model_spec(str(profile.model_id))
    lora = memory.count_lora_parameters(spec, 8, "all-linear")
    assert spec.tie_word_embeddings and result.trainable_params == lora + spec.vocab_size * spec.hidden_size  # one tied copy
    e = memory.estimate_training_memory(spec, "qlora", lora_r=8, lora_targets="all-linear", precision="fp32",
                                        modules_to_save=("embed_tokens", "lm_head"))
    assert e.trainable_params == result.trainable_params
    assert result.memory["base_weights"] + result.memory["adapter"] == e.weights_bytes
    assert len(result.correct) == len(result.nll) == 2 and set(result.accuracy_at) == {2}
    assert result.val_loss["step"] == [4] and result.seed == 3 and result.probe_nll > 0
    assert result.adapter_dir.name == "adapter" and "seed3" in result.adapter_dir.parent.name
    again = experiments.run_cell(cell, profile, ROWS, [], ROWS[:2], kwargs, tmp_path / "again", max_new_tokens=4, seed=3)
    other = experiments.run_cell(cell, profile, ROWS, [], ROWS[:2], kwargs, tmp_path / "other", max_new_tokens=4, seed=4)
    assert again.train_loss == result.train_loss and other.train_loss != result.train_loss


def test_run_cell_full_fine_tuning(profile, tmp_path):
    kwargs = profile.training_kwargs(max_steps=2, per_device_train_batch_size=4, logging_steps=1, eval_strategy="no",
                                     learning_rate=1e-3, max_length=48)
    result = experiments.run_cell(experiments.FULL_FT, profile, ROWS, [], ROWS[:2], kwargs, tmp_path, max_new_tokens=4)
    assert result.trainable_params == result.total_params and result.adapter_dir is None
    assert result.row()["method"] == "full"


def test_modules_to_save_in_the_estimator():
    spec = memory.load_model_spec("qwen2.5-7b")
    plain = memory.estimate_training_memory(spec, "lora", lora_r=8)
    both = memory.estimate_training_memory(spec, "lora", lora_r=8, modules_to_save=("embed_tokens", "lm_head"))
    copies = 1 if spec.tie_word_embeddings else 2
    assert both.trainable_params - plain.trainable_params == copies * spec.vocab_size * spec.hidden_size
    tied = memory.estimate_training_memory(memory.load_model_spec("qwen2.5-1.5b"), "lora", modules_to_save=("embed_tokens", "lm_head"))
    assert memory.load_model_spec("qwen2.5-1.5b").tie_word_embeddings and tied.trainable_params > 0
    assert both.peak_bytes > plain.peak_bytes
    with pytest.raises(ValueError, match="modules_to_save"):
        memory.estimate_training_memory(spec, "lora", modules_to_save=("norm",))


def test_answer_nll_per_example_averages_to_answer_nll(profile):
    from ftlab import sft
    from ftlab.profile import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(profile)
    pairs = sft.to_pairs(ROWS[:3], "chat", tok)
    per = sft.answer_nll_per_example(model, tok, pairs)
    sums = sft.answer_nll_sums(model, tok, pairs)
    assert len(per) == 3 and all(x > 0 for x in per)
    assert sft.answer_nll(model, tok, pairs) == pytest.approx(sum(s for s, _ in sums) / sum(c for _, c in sums))
    assert per[0] == pytest.approx(sums[0][0] / sums[0][1])
