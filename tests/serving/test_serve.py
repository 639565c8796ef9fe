"""``mlflow models serve`` serves the logged model: the real server, on a loopback port."""

from __future__ import annotations

import numpy as np


def test_mlflow_models_serve_answers_with_the_in_process_logits(logged_run, tmp_path):
    import mlflow

    from dlas.serving.server import invoke, serve

    uri = f"runs:/{logged_run.run_id}/model"
    ref = np.load(mlflow.artifacts.download_artifacts(f"{uri}/data/reference.npz"))
    in_process = mlflow.pyfunc.load_model(uri).predict(ref["inputs"])
    assert np.std(in_process, axis=0).mean() > 1e-3  # logits that differ between images

    with serve(uri, env=logged_run.env(), log_path=tmp_path / "serve.log") as url:
        served = invoke(url, ref["inputs"])
        single = invoke(url, ref["inputs"][:1])
    np.testing.assert_allclose(served, in_process, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single, in_process[:1], rtol=1e-5, atol=1e-5)
