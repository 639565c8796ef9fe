"""The compiled model as an MLflow model: logged by every local TVM run, loadable in a fresh
process with ``mlflow.pyfunc.load_model``, giving the logits the run computed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

LOAD_AND_PREDICT = """
import json, time, numpy as np
start = time.perf_counter()
import mlflow
model = mlflow.pyfunc.load_model("runs:/{run_id}/model")
local = mlflow.artifacts.download_artifacts("runs:/{run_id}/model/data/reference.npz")
ref = np.load(local)
logits = model.predict(ref["inputs"])
spec = mlflow.artifacts.load_dict("runs:/{run_id}/model/data/input_spec.json")
mean, std = (np.asarray(spec[k], dtype=np.float32)[:, None, None] for k in ("mean", "std"))
raw = model.predict(ref["inputs"] * std + mean, params={{"raw_pixels": True}})
print(json.dumps({{
    "seconds": time.perf_counter() - start,
    "logits": logits.tolist(), "raw": raw.tolist(), "reference": ref["logits"].tolist(),
    "dtype": str(logits.dtype),
    "flavours": sorted(model.metadata.flavors),
}}))
"""


def test_run_logs_a_model_that_a_fresh_process_loads_and_runs(logged_run):
    client = MlflowClient(logged_run.uri)
    tags = client.get_run(logged_run.run_id).data.tags
    assert tags["dlas.model.logged"] == "true", tags.get("dlas.model.logged")

    proc = logged_run.python(LOAD_AND_PREDICT.format(run_id=logged_run.run_id))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    reference = np.asarray(out["reference"])
    # The reference varies from image to image and class to class, or agreement means nothing.
    assert reference.shape == (2, 10) and np.std(reference, axis=0).mean() > 1e-3
    np.testing.assert_allclose(out["logits"], reference, rtol=1e-5, atol=1e-5)
    # Normalising in the model (raw_pixels) gives the same logits as normalising before it.
    np.testing.assert_allclose(out["raw"], reference, rtol=1e-4, atol=1e-4)
    assert out["dtype"] == "float32"
    assert out["flavours"] == ["dlas", "python_function"]
    print(
        f"\nload-and-predict in a fresh process: {out['seconds']:.2f} s (after interpreter start)"
    )


def test_logged_model_carries_spec_signature_and_labels(logged_run):
    import mlflow

    info = mlflow.models.get_model_info(f"runs:/{logged_run.run_id}/model")
    inputs = info.signature.inputs.to_dict()
    assert list(inputs[0]["tensor-spec"]["shape"]) == [-1, 3, 32, 32]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 10]
    spec = mlflow.artifacts.load_dict(f"runs:/{logged_run.run_id}/model/data/input_spec.json")
    assert spec["mean"] == [0.2, 0.2, 0.2] and spec["std"] == [0.3, 0.3, 0.3]  # digits.yaml
    assert spec["labels"] == [str(i) for i in range(10)] and spec["layout"] == "NCHW"


def test_wrong_input_shape_says_what_fits(logged_run):
    import mlflow

    model = mlflow.pyfunc.load_model(f"runs:/{logged_run.run_id}/model")
    with pytest.raises(Exception, match=r"3, 32, 32|shape"):
        model.predict(np.zeros((1, 3, 16, 16), dtype=np.float32))


def test_pytorch_baseline_logs_the_eager_model(logged_run):
    import mlflow
    import torch

    from dlas import pipeline
    from tests.serving.conftest import compose_tiny

    # Same store and caches as the fixture's run: the checkpoint is reused.
    pipeline.run(compose_tiny(logged_run.root, "tuning=pytorch", "device.timed_runs=2"))
    run_id = mlflow.last_active_run().info.run_id
    assert MlflowClient(logged_run.uri).get_run(run_id).data.tags["dlas.model.logged"] == "true"
    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    ref = np.load(
        mlflow.artifacts.download_artifacts(f"runs:/{logged_run.run_id}/model/data/reference.npz")
    )
    with torch.no_grad():
        eager = model(torch.from_numpy(ref["inputs"])).numpy()
    # The eager model of the baseline run is the network the TVM run compiled.
    np.testing.assert_allclose(eager, ref["logits"], rtol=1e-4, atol=1e-4)
