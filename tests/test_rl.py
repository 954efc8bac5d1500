"""ftlab.rl: PPO's objective, the KTO conversion, reward scoring, and the variants' shared budget."""

import math

import pytest
import torch

from ftlab import rl


def test_ppo_loss_at_ratio_one_is_minus_the_mean_advantage():
    logp = -torch.rand(3, 5, dtype=torch.float64)
    adv = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.isclose(rl.ppo_clipped_loss(logp, logp, adv), -adv.mean())


def test_ppo_gradient_vanishes_exactly_in_the_clip_region():
    ratios = torch.tensor([[0.5, 0.9, 1.1, 1.5]] * 2, dtype=torch.float64)
    old = torch.full_like(ratios, -1.0)
    new = (old + ratios.log()).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    rl.ppo_clipped_loss(new, old, adv, epsilon=0.2).backward()
    assert torch.equal(new.grad == 0, rl.clip_region(ratios, adv, 0.2))
    assert rl.clip_region(ratios, adv, 0.2).tolist() == [[False, False, False, True], [True, False, False, False]]


def test_ppo_kl_penalty_is_zero_at_the_reference_and_needs_it():
    logp = -torch.rand(2, 3, dtype=torch.float64)
    adv = torch.zeros(2, dtype=torch.float64)
    assert rl.ppo_clipped_loss(logp, logp, adv, logp, beta=1.0).item() == 0.0
    assert rl.ppo_clipped_loss(logp + 0.1, logp, adv, logp, beta=1.0).item() > 0.0
    with pytest.raises(ValueError, match="logp_ref"):
        rl.ppo_clipped_loss(logp, logp, adv, beta=0.1)


def test_ppo_mask_excludes_padding():
    logp = -torch.rand(1, 4, dtype=torch.float64)
    new = logp.clone()
    new[0, 3] += 5.0  # a padded position that moved a lot
    mask = torch.tensor([[1, 1, 1, 0]])
    adv = torch.tensor([1.0], dtype=torch.float64)
    assert torch.isclose(rl.ppo_clipped_loss(new, logp, adv, mask=mask), torch.tensor(-1.0, dtype=torch.float64))


def test_unpaired_rows_give_one_good_and_one_bad_row_per_pair():
    pairs = [{"prompt": "q1", "chosen": "good1", "rejected": "bad1"}, {"prompt": "q2", "chosen": "good2", "rejected": "bad2"}]
    rows = rl.unpaired_rows(pairs)
    assert rows == [{"prompt": "q1", "completion": "good1", "label": True}, {"prompt": "q1", "completion": "bad1", "label": False},
                    {"prompt": "q2", "completion": "good2", "label": True}, {"prompt": "q2", "completion": "bad2", "label": False}]
    from trl import unpair_preference_dataset

    from ftlab.alignment import preference_dataset

    trl_rows = unpair_preference_dataset(preference_dataset(pairs)).to_list()
    assert sorted((r["completion"][0]["content"], r["label"]) for r in trl_rows) == sorted((r["completion"], r["label"]) for r in rows)


def test_window_mean():
    assert rl.window_mean([1, 2, 3, 4], True, 2) == 1.5
    assert rl.window_mean([1, 2, 3, 4], False, 2) == 3.5


def test_variant_kwargs_copy_the_dpo_budget(tmp_path):
    from ftlab import alignment
    from ftlab.profile import get_profile

    args = alignment.dpo_args(get_profile("cpu"), tmp_path, beta=0.1, steps=12, learning_rate=3e-4, batch_size=4)
    kw = rl.variant_kwargs(args)
    assert (kw["max_steps"], kw["per_device_train_batch_size"], kw["learning_rate"], kw["max_length"]) == (12, 4, 3e-4, 160)


def test_reward_scores_match_the_model_on_the_chat_rendering():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from ftlab import tiny

    tokenizer = tiny.load_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForSequenceClassification(config).eval()
    prompts, answers = ["공유기가 안 돼요", "프린터 질문"], ["전원을 껐다 켜세요.", "드라이버를 설치하세요. 도움이 되셨으면 좋겠어요."]
    batched = rl.reward_scores(model, tokenizer, prompts, answers)
    single = [rl.reward_scores(model, tokenizer, [p], [a])[0] for p, a in zip(prompts, answers)]
    assert all(math.isclose(b, s, rel_tol=1e-4, abs_tol=1e-5) for b, s in zip(batched, single))  # padding does not change a score
