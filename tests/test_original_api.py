"""Code written for the original tuned-lens keeps working: every documented name imports and
keeps its signature (issue 12, item 1).

``DOCUMENTED`` is the original's Sphinx API reference (``nn.lenses``, ``nn.unembed``,
``plotting``, ``load_artifacts``) plus the module-level functions of ``data``, ``utils``,
``model_surgery``, ``stats`` and ``causal`` and the methods of the ``scripts`` dataclasses
that its code and tutorials use, each written as the original documents it (the dataclasses'
fields: tests/train/test_original_scripts.py). A parameter may gain a default or be followed by new optional ones;
nothing documented may be renamed, moved, reordered, lose its default or change its default.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing

import pytest

DOCUMENTED = r"""
tuned_lens.nn.lenses.Lens(unembed)
tuned_lens.nn.lenses.Lens.forward(h, idx)
tuned_lens.nn.lenses.Lens.transform_hidden(h, idx)
tuned_lens.nn.lenses.LogitLens(unembed)
tuned_lens.nn.lenses.LogitLens.forward(h, idx)
tuned_lens.nn.lenses.LogitLens.from_model(model)
tuned_lens.nn.lenses.LogitLens.transform_hidden(h, idx)
tuned_lens.nn.lenses.TunedLens(unembed, config)
tuned_lens.nn.lenses.TunedLens.forward(h, idx)
tuned_lens.nn.lenses.TunedLens.from_model(model, model_revision=None, bias=True)
tuned_lens.nn.lenses.TunedLens.from_model_and_pretrained(model, lens_resource_id=None, **kwargs)
tuned_lens.nn.lenses.TunedLens.from_unembed_and_pretrained(unembed, lens_resource_id, **kwargs)
tuned_lens.nn.lenses.TunedLens.generate(model, layer, input_ids, do_sample=True, temp=1.0, max_new_tokens=100)
tuned_lens.nn.lenses.TunedLens.save(path, ckpt='params.pt', config='config.json')
tuned_lens.nn.lenses.TunedLens.transform_hidden(h, idx)
tuned_lens.nn.lenses.TunedLensConfig(base_model_name_or_path, d_model, num_hidden_layers, bias=True, base_model_revision=None, unembed_hash=None, lens_type='linear_tuned_lens')
tuned_lens.nn.lenses.TunedLensConfig.from_dict(config_dict)
tuned_lens.nn.lenses.TunedLensConfig.to_dict()
tuned_lens.nn.unembed.InversionOutput(preimage, grad_norm, kl, loss, nfev)
tuned_lens.nn.unembed.Unembed(model)
tuned_lens.nn.unembed.Unembed.forward(h)
tuned_lens.nn.unembed.Unembed.invert(logits, *, h0=None, max_iter=1000, optimizer='lbfgs', prior_weight=0.0, prior=None, step_size=1.0, tol=0.001, weight=None)
tuned_lens.nn.unembed.Unembed.unembedding_hash()
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory(log_probs, input_ids, targets=None, anti_targets=None, tokenizer=None)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.cross_entropy(**kwargs)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.entropy(**kwargs)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.forward_kl(**kwargs)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.from_lens_and_cache(lens, input_ids, cache, model_logits, targets=None, anti_targets=None, residual_component='resid_pre', mask_input=False)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.from_lens_and_model(lens, model, input_ids, tokenizer=None, targets=None, anti_targets=None, mask_input=False)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.js_divergence(other, **kwargs)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.kl_divergence(other, **kwargs)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.log_prob_diff(delta=False)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.max_probability(**kwargs)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.rank(show_ranks=False, **kwargs)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.slice_sequence(slice)
tuned_lens.plotting.prediction_trajectory.PredictionTrajectory.total_variation(other, **kwargs)
tuned_lens.plotting.token_formatter.TokenFormatter(ellipsis='…', newline_replacement='\\n', newline_token='Ċ', whitespace_token='Ġ', whitespace_replacement='_', max_string_len=7)
tuned_lens.plotting.token_formatter.TokenFormatter.format(token)
tuned_lens.plotting.token_formatter.TokenFormatter.pad_token_repr_to_max_len(token_repr)
tuned_lens.plotting.trajectory_plotting.trunc_string_left(string, new_len)
tuned_lens.plotting.trajectory_plotting.TrajectoryLabels(label_strings, hover_over_entries=None)
tuned_lens.plotting.trajectory_plotting.TrajectoryLabels.stride(stride)
tuned_lens.plotting.trajectory_plotting.TrajectoryLabels.template_and_customdata(col_width_limit=10)
tuned_lens.plotting.trajectory_plotting.TrajectoryStatistic(name, stats, sequence_labels=None, trajectory_labels=None, units=None, max=None, min=None, includes_output=True, _layer_labels=None)
tuned_lens.plotting.trajectory_plotting.TrajectoryStatistic.clip(min, max)
tuned_lens.plotting.trajectory_plotting.TrajectoryStatistic.figure(title='', colorscale='rdbu_r', token_width=80)
tuned_lens.plotting.trajectory_plotting.TrajectoryStatistic.heatmap(colorscale='rdbu_r', log_scale=False, **kwargs)
tuned_lens.plotting.trajectory_plotting.TrajectoryStatistic.stride(stride)
tuned_lens.load_artifacts.available_lens_artifacts(repo_id, repo_type, revision='main', config_file='config.json', ckpt_file='params.pt', subfolder='lens')
tuned_lens.load_artifacts.load_lens_artifacts(resource_id, repo_id=None, repo_type=None, revision='main', config_file='config.json', ckpt_file='params.pt', subfolder='lens', cache_dir=None)
tuned_lens.data.chunk_and_tokenize(data, tokenizer, *, format='torch', num_proc=MIN_PROCS, text_key='text', max_seq_len=2048, return_final_batch=False, load_from_cache_file=True)
tuned_lens.data.compute_nats_to_bpb_ratio(raw, tokenized)
tuned_lens.data.get_columns_all_equal(dataset)
tuned_lens.model_surgery.get_value_for_key(obj, key)
tuned_lens.model_surgery.set_value_for_key_(obj, key, value)
tuned_lens.model_surgery.get_key_path(model, key_path)
tuned_lens.model_surgery.set_key_path_(model, key_path, value)
tuned_lens.model_surgery.assign_key_path(model, key_path, value)
tuned_lens.model_surgery.get_unembedding_matrix(model)
tuned_lens.model_surgery.get_final_norm(model)
tuned_lens.model_surgery.get_transformer_layers(model)
tuned_lens.model_surgery.delete_layers(model, indices)
tuned_lens.model_surgery.permute_layers(model, indices)
tuned_lens.model_surgery.permute_layers_(model, indices)
tuned_lens.model_surgery.replace_layers(model, indices, replacements)
tuned_lens.stats.kl_divergence(logit_p, logit_q, dim=-1)
tuned_lens.stats.js_divergence(logit_p, logit_q, dim=-1)
tuned_lens.stats.js_distance(logit_p, logit_q, dim=-1)
tuned_lens.stats.LogitStats(n=None, marginal_probs=None, sufficient_stats=None)
tuned_lens.stats.LogitStats.update(logits, assume_normalized=False)
tuned_lens.stats.LogitStats.all_reduce_()
tuned_lens.stats.LogitStats.mle(max_iter=100, tol=0.0001)
tuned_lens.causal.ablate_subspace(model, A, layer_index, mode='zero', orthonormal=False)
tuned_lens.causal.extract_causal_bases(lens, hiddens, k, *, labels=None, max_iter=100, mode='mean')
tuned_lens.causal.remove_subspace(u, A, mode='zero', orthonormal=False)
tuned_lens.causal.derange(batch, generator=None)
tuned_lens.causal.sample_derangement(n, device=CPU, generator=None)
tuned_lens.causal.ablation.ablate_layer(model, layer_index, method, *, mode='batch')
tuned_lens.utils.assert_type(typ, obj)
tuned_lens.utils.maybe_all_cat(x)
tuned_lens.utils.maybe_all_gather_lists(lst)
tuned_lens.utils.maybe_all_reduce(x, op='mean')
tuned_lens.utils.maybe_unpack(x)
tuned_lens.utils.shift_labels(x, shift)
tuned_lens.utils.shift_preds(x, shift)
tuned_lens.utils.pairwise(it)
tuned_lens.utils.revcumsum(seq)
tuned_lens.utils.send_to_device(tree, device)
tuned_lens.utils.tensor_hash(arr)
tuned_lens.utils.pytree_map(func, tree, strict=True)
tuned_lens.utils.pytree_cat(trees, dim=0)
tuned_lens.utils.pytree_stack(trees, dim=0)
tuned_lens.scripts.ingredients.Data.load(tokenizer)
tuned_lens.scripts.ingredients.Model.load(device, must_use_cache=False)
tuned_lens.scripts.ingredients.Model.load_tokenizer(must_use_cache=False)
tuned_lens.scripts.ingredients.Optimizer.create_optim(params)
tuned_lens.scripts.ingredients.Optimizer.create_scheduler(opt, num_steps)
tuned_lens.scripts.ingredients.Optimizer.per_parameter_optim_state_size()
tuned_lens.scripts.train_loop.Train.execute()
tuned_lens.scripts.eval_loop.Eval.execute()
"""

#: Deliberate differences, each named in the README's "Differences from the original library".
DELIBERATE = {
    # Files: lenses are written as safetensors, never pickle (a params.pt is still read).
    ("tuned_lens.nn.lenses.TunedLens.save", "ckpt"): "params.safetensors",
}

#: Defaults the documentation writes as expressions: ``min(cpu_count() // 2, 8)`` and the CPU.
_NAMED_DEFAULTS = {"MIN_PROCS": "min(cpu_count() // 2, 8)", "CPU": "cpu"}


def _documented() -> list[tuple[str, list[inspect.Parameter]]]:
    """``(dotted name, parameters)`` for every line of :data:`DOCUMENTED`."""
    out = []
    for line in DOCUMENTED.strip().splitlines():
        name, _, args = line.partition("(")
        tree = ast.parse(f"def f({args[:-1]}): pass")
        fn = tree.body[0]
        assert isinstance(fn, ast.FunctionDef)
        spec = fn.args
        params: list[inspect.Parameter] = []
        positional = spec.args
        defaults = [None] * (len(positional) - len(spec.defaults)) + list(spec.defaults)
        for arg, default in zip(positional, defaults):
            params.append(_param(arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default))
        if spec.vararg:
            params.append(_param(spec.vararg.arg, inspect.Parameter.VAR_POSITIONAL, None))
        for arg, default in zip(spec.kwonlyargs, spec.kw_defaults):
            params.append(_param(arg.arg, inspect.Parameter.KEYWORD_ONLY, default))
        if spec.kwarg:
            params.append(_param(spec.kwarg.arg, inspect.Parameter.VAR_KEYWORD, None))
        out.append((name, params))
    return out


def _param(name: str, kind: inspect._ParameterKind, default: ast.expr | None) -> inspect.Parameter:
    if default is None:
        return inspect.Parameter(name, kind)
    if isinstance(default, ast.Name) and default.id in _NAMED_DEFAULTS:
        return inspect.Parameter(name, kind, default=_NAMED_DEFAULTS[default.id])
    return inspect.Parameter(name, kind, default=ast.literal_eval(default))


def _resolve(dotted: str) -> tuple[object, bool]:
    """The object named ``dotted`` and whether it is a method (its ``self`` is not listed)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj, len(parts) - split > 1
    raise ImportError(dotted)


def _expected_default(doc: object) -> object:
    if doc == _NAMED_DEFAULTS["MIN_PROCS"]:
        from multiprocessing import cpu_count

        return min(cpu_count() // 2, 8)
    return doc


def _same_default(actual: object, documented: object) -> bool:
    if documented == _NAMED_DEFAULTS["CPU"]:
        import torch

        return str(torch.device(actual)) == "cpu"  # type: ignore[arg-type]
    return actual == _expected_default(documented) and type(actual) is type(
        _expected_default(documented)
    )


def _signature(obj: object, is_method: bool) -> list[inspect.Parameter]:
    target = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
    if inspect.isclass(obj) and target is object.__init__:
        target = obj
    params = list(inspect.signature(target).parameters.values())  # type: ignore[arg-type]
    unbound = inspect.isclass(obj) or (is_method and params and params[0].name in ("self", "cls"))
    if unbound and params and params[0].name in ("self", "cls"):
        params = params[1:]
    return params


@pytest.mark.parametrize(("name", "documented"), _documented(), ids=lambda v: str(v)[:80])
def test_documented_name_keeps_its_signature(name: str, documented: list[inspect.Parameter]):
    obj, is_method = _resolve(name)
    actual = _signature(obj, is_method)
    by_name = {p.name: p for p in actual}
    # The documented parameters come first, in order, with the same kind (a positional
    # parameter may become keyword-only only if it was keyword-only) and the same default.
    for index, doc in enumerate(documented):
        assert doc.name in by_name, f"{name}: parameter {doc.name!r} is gone ({actual})"
        got = by_name[doc.name]
        if doc.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            assert actual[index].name == doc.name, f"{name}: {doc.name!r} moved ({actual})"
        assert got.kind == doc.kind, f"{name}: {doc.name!r} is {got.kind}, was {doc.kind}"
        if (name, doc.name) in DELIBERATE:
            assert got.default == DELIBERATE[name, doc.name]
        elif doc.default is not inspect.Parameter.empty:
            assert got.default is not inspect.Parameter.empty, (
                f"{name}: {doc.name!r} lost its default"
            )
            assert _same_default(got.default, doc.default), (
                f"{name}: {doc.name!r} defaults to {got.default!r}, was {doc.default!r}"
            )
    # Anything new must be optional, so that every documented call still binds.
    documented_names = {p.name for p in documented}
    for extra in actual:
        if extra.name in documented_names:
            continue
        assert (
            extra.kind
            in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            )
            or extra.default is not inspect.Parameter.empty
        ), f"{name}: new required {extra.name!r}"


def test_norm_is_the_originals_union():
    from torch import nn
    from tuned_lens import model_surgery

    assert typing.get_origin(model_surgery.Norm) is typing.Union
    args = model_surgery.Norm.__args__
    assert nn.LayerNorm in args and nn.Module in args
    assert {cls.__name__ for cls in args} >= {"LlamaRMSNorm", "GemmaRMSNorm"}
    # How the original used it: the final norm of any supported model passes the check.
    from tuned_lens.testing import tiny_model

    for family in ("gpt2", "llama", "gemma"):
        assert isinstance(model_surgery.get_final_norm(tiny_model(family)), args)


def test_exports_of_the_originals_packages():
    """The names each of the original's ``__init__`` files exported."""
    exports = {
        "tuned_lens": ["TunedLens"],
        "tuned_lens.nn": ["Lens", "LogitLens", "TunedLens", "TunedLensConfig", "InversionOutput"],
        "tuned_lens.stats": ["js_distance", "js_divergence", "kl_divergence", "LogitStats"],
        "tuned_lens.causal": [
            "CausalBasis",
            "ablate_subspace",
            "extract_causal_bases",
            "remove_subspace",
            "derange",
            "sample_derangement",
        ],
        "tuned_lens.plotting": [
            "PredictionTrajectory",
            "TokenFormatter",
            "TrajectoryLabels",
            "TrajectoryStatistic",
        ],
    }
    for module, names in exports.items():
        mod = importlib.import_module(module)
        missing = [n for n in names if not hasattr(mod, n)]
        assert not missing, f"{module} lacks {missing}"
