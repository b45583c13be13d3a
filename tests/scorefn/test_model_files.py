"""Model files as people have them: a LightGBM text model, the scikit-learn API's booster, an
MLflow model folder of the lightgbm flavor are taken; pickles, joblib files and other MLflow
flavors are refused (found by content, never unpickled) with a message saying how to save a
text model. Models are trained on scikit-learn's bundled real datasets."""

from __future__ import annotations

import gzip
import os
import pickle
import warnings

import numpy as np
import pytest

from scorefn.__main__ import main as cli
from scorefn.model_files import (
    InvalidMlflowModel,
    ModelFileError,
    PickledModel,
    UnsupportedMlflowModel,
    model_shape,
    read_model_file,
)
from shared.errors import InvalidModel
from shared.models.model import parse_model

lgb = pytest.importorskip("lightgbm")
datasets = pytest.importorskip("sklearn.datasets")

HOW_TO_SAVE = 'booster.save_model("model.txt")'
SKLEARN_HOW = "model.booster_.save_model"


@pytest.fixture(scope="module")
def cancer():
    X, y = datasets.load_breast_cancer(as_frame=True, return_X_y=True)
    clf = lgb.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1, random_state=1).fit(X, y)
    return clf, X


@pytest.fixture(scope="module")
def iris():
    X, y = datasets.load_iris(as_frame=True, return_X_y=True)
    clf = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, min_child_samples=5, verbose=-1,
                             random_state=1).fit(X, y)
    return clf, X


@pytest.fixture(scope="module")
def mlflow_folders(tmp_path_factory, cancer):
    """Folders written by MLflow itself: the lightgbm flavor of a Booster (model.lgb), of the
    scikit-learn model (pickled: model.pkl), and the sklearn flavor alone (model.pkl)."""
    mlflow_lightgbm = pytest.importorskip("mlflow.lightgbm")
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    clf, _ = cancer
    root = tmp_path_factory.mktemp("mlflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow warns about pickles: that is the point here
        mlflow_lightgbm.save_model(clf.booster_, str(root / "booster"), pip_requirements=["lightgbm"])
        mlflow_lightgbm.save_model(clf, str(root / "sklearn_api"), serialization_format="cloudpickle",
                                   pip_requirements=["lightgbm"])
        mlflow_sklearn.save_model(clf, str(root / "sklearn_flavor"),
                                  serialization_format="cloudpickle", pip_requirements=["lightgbm"])
    return root


def loaded(data: bytes):
    return parse_model(data, name="m", path="m", version="v", last_modified=None)


def matrix(X) -> np.ndarray:
    """The float64 matrix a request body becomes (as the serving path predicts)."""
    return np.ascontiguousarray(X.to_numpy(dtype=np.float64))


# -- taken ------------------------------------------------------------------------------------

def test_a_lightgbm_text_model_is_read_as_it_is(demo_models):
    path = demo_models["churn"].path
    found = read_model_file(path)
    assert found.data == path.read_bytes()
    assert found.describe() == "LightGBM text model"
    assert found.mlflow_folder is None


def test_a_scikit_learn_binary_classifier_saved_as_text_predicts_its_predict_proba(cancer, tmp_path):
    clf, X = cancer
    path = tmp_path / "cancer.txt"
    clf.booster_.save_model(str(path))
    model = loaded(read_model_file(path).data)
    np.testing.assert_array_equal(model.predict(matrix(X)), clf.predict_proba(X)[:, 1])
    # One row goes through LightGBM's fast single-row path: the same numbers.
    assert model.predict(matrix(X.iloc[:1]))[0] == clf.predict_proba(X.iloc[:1])[0, 1]


def test_a_scikit_learn_multiclass_classifier_predicts_each_class_probability(iris, tmp_path):
    clf, X = iris
    path = tmp_path / "iris.txt"
    clf.booster_.save_model(str(path))
    model = loaded(read_model_file(path).data)
    assert model.info.num_classes == 3
    np.testing.assert_array_equal(model.predict(matrix(X)), clf.predict_proba(X))


def test_a_scikit_learn_regressor_saved_as_text_predicts_its_predict(tmp_path):
    X, y = datasets.load_diabetes(as_frame=True, return_X_y=True)
    reg = lgb.LGBMRegressor(n_estimators=25, verbose=-1, random_state=1).fit(X, y)
    path = tmp_path / "diabetes.txt"
    reg.booster_.save_model(str(path))
    np.testing.assert_array_equal(loaded(read_model_file(path).data).predict(matrix(X)),
                                  reg.predict(X))


def test_the_content_decides_not_the_name_a_text_model_called_pkl_is_taken(cancer, tmp_path):
    clf, _ = cancer
    path = tmp_path / "model.pkl"
    clf.booster_.save_model(str(path))
    assert read_model_file(path).data == path.read_bytes()


def test_a_gzipped_text_model_is_taken_decompressed(demo_models, tmp_path):
    text = demo_models["price"].path.read_bytes()
    path = tmp_path / "price.txt.gz"
    path.write_bytes(gzip.compress(text))
    found = read_model_file(path)
    assert found.data == text and found.compression == "gzip"
    assert "gzip-compressed" in found.describe()


def test_an_mlflow_lightgbm_folder_gives_its_model_lgb(mlflow_folders, cancer):
    clf, X = cancer
    folder = mlflow_folders / "booster"
    found = read_model_file(folder)
    assert found.data == (folder / "model.lgb").read_bytes()
    assert found.describe() == (f"LightGBM text model (from MLflow folder {folder}, flavor "
                                f"lightgbm, file model.lgb)")
    np.testing.assert_array_equal(loaded(found.data).predict(matrix(X)), clf.predict_proba(X)[:, 1])
    # Its MLmodel file, given instead of the folder, finds the same model.
    assert read_model_file(folder / "MLmodel").data == found.data


def test_the_model_shape_is_what_lightgbm_says(cancer):
    clf, _ = cancer
    text = clf.booster_.model_to_string().encode()
    shape = model_shape(text)
    assert shape.trees == clf.booster_.num_trees()
    assert shape.features == clf.booster_.num_feature()
    dumped = clf.booster_.dump_model()["tree_info"]
    assert shape.max_leaves == max(t["num_leaves"] for t in dumped)
    assert shape.categorical == 0


def test_categorical_features_are_counted(tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = datasets.load_breast_cancer(as_frame=True, return_X_y=True)
    X = X.iloc[:, :5].copy()
    # Unordered category columns (LightGBM reads ordered ones as numbers).
    X["size"] = pd.cut(X["mean radius"], 4, labels=["s", "m", "l", "xl"]).astype(str).astype("category")
    X["texture"] = (pd.cut(X["mean texture"], 3, labels=["fine", "mid", "coarse"])
                    .astype(str).astype("category"))
    clf = lgb.LGBMClassifier(n_estimators=10, verbose=-1, min_child_samples=5).fit(X, y)
    category_columns = X.select_dtypes("category").columns
    assert model_shape(clf.booster_.model_to_string().encode()).categorical == len(category_columns)


# -- refused ----------------------------------------------------------------------------------

def a_pickle_that_would_run_code(marker, protocol: int) -> bytes:
    """A pickle whose loading makes a directory: proof that it was (not) unpickled."""
    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))
    return pickle.dumps(Payload(), protocol=protocol)


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_of_any_protocol_is_refused_and_never_unpickled(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "model.txt"  # the name says text; the content says pickle
    path.write_bytes(a_pickle_that_would_run_code(marker, protocol))
    with pytest.raises(PickledModel) as err:
        read_model_file(path)
    assert not marker.exists()
    assert err.value.code == "pickled_model" and isinstance(err.value, InvalidModel)
    assert "never unpickles" in err.value.message
    assert HOW_TO_SAVE in err.value.message and SKLEARN_HOW in err.value.message


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)],
                         ids=["plain", "zlib", "gzip", "bz2", "xz", "lzma"])
def test_a_joblib_file_is_refused_naming_the_scikit_learn_class(cancer, tmp_path, compress):
    joblib = pytest.importorskip("joblib")
    clf, _ = cancer
    path = tmp_path / "model.bin"
    joblib.dump(clf, path, compress=compress)
    with pytest.raises(PickledModel) as err:
        read_model_file(path)
    assert "lightgbm.sklearn.LGBMClassifier" in err.value.message
    assert SKLEARN_HOW in err.value.message
    if compress:
        assert "compressed pickle" in err.value.message


def test_a_pickled_booster_is_refused(cancer, tmp_path):
    clf, _ = cancer
    path = tmp_path / "booster.pkl"
    path.write_bytes(pickle.dumps(clf.booster_))
    with pytest.raises(PickledModel) as err:
        read_model_file(path)
    assert "lightgbm.basic.Booster" in err.value.message and HOW_TO_SAVE in err.value.message


def test_lightgbms_json_dump_is_refused(cancer, tmp_path):
    import json

    clf, _ = cancer
    path = tmp_path / "model.json"
    path.write_text(json.dumps(clf.booster_.dump_model()))
    with pytest.raises(ModelFileError) as err:
        read_model_file(path)
    assert "dump_model" in err.value.message and HOW_TO_SAVE in err.value.message


@pytest.mark.parametrize("edit", [lambda t: b"\xef\xbb\xbf" + t, lambda t: t.replace(b"\n", b"\r\n"),
                                  lambda t: b"\xef\xbb\xbf" + t.replace(b"\n", b"\r\n")],
                         ids=["bom", "crlf", "bom-crlf"])
def test_a_text_model_an_editor_rewrote_is_refused_saying_so(demo_models, tmp_path, edit):
    path = tmp_path / "model.txt"
    path.write_bytes(edit(demo_models["churn"].path.read_bytes()))
    with pytest.raises(ModelFileError) as err:
        read_model_file(path)
    assert "rewritten by an editor" in err.value.message


def test_a_zipped_mlflow_folder_is_refused_asking_to_unzip_it(mlflow_folders, tmp_path):
    import shutil

    archive = shutil.make_archive(str(tmp_path / "model"), "zip", mlflow_folders / "booster")
    with pytest.raises(ModelFileError) as err:
        read_model_file(tmp_path / "model.zip")
    assert archive.endswith("model.zip") and "unzip it" in err.value.message


@pytest.mark.parametrize("text", [b"class Model:\n    pass\n", b"(a note)\n", b"}\n"])
def test_text_that_starts_like_a_protocol_0_pickle_is_not_called_one(tmp_path, text):
    path = tmp_path / "model.py"
    path.write_bytes(text)
    with pytest.raises(ModelFileError) as err:
        read_model_file(path)
    assert type(err.value) is ModelFileError and "not a LightGBM text model" in err.value.message


def test_an_lz4_file_is_named_as_such(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(b"\x04\x22\x4d\x18" + bytes(64))  # the LZ4 frame magic number
    with pytest.raises(ModelFileError) as err:
        read_model_file(path)
    assert "lz4-compressed" in err.value.message and HOW_TO_SAVE in err.value.message


def test_anything_else_is_refused_saying_what_a_text_model_is(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ModelFileError) as err:
        read_model_file(path)
    assert err.value.code == "unsupported_model_file"
    assert "not a LightGBM text model" in err.value.message and HOW_TO_SAVE in err.value.message


def test_an_mlflow_folder_of_a_pickled_scikit_learn_model_is_refused(mlflow_folders):
    folder = mlflow_folders / "sklearn_api"
    with pytest.raises(UnsupportedMlflowModel) as err:
        read_model_file(folder)
    message = err.value.message
    assert "lightgbm.sklearn.LGBMClassifier" in message and "model.pkl" in message
    assert "mlflow.lightgbm.log_model(model.booster_" in message and "model.lgb" in message


def test_an_mlflow_folder_of_another_flavor_is_refused_listing_its_flavors(mlflow_folders):
    with pytest.raises(UnsupportedMlflowModel) as err:
        read_model_file(mlflow_folders / "sklearn_flavor")
    message = err.value.message
    assert err.value.code == "unsupported_mlflow_model"
    assert "python_function, sklearn" in message and "not lightgbm" in message
    assert "mlflow.lightgbm.save_model" in message and "model.lgb" in message
    assert HOW_TO_SAVE in message


def test_a_folder_without_mlmodel_is_refused(tmp_path):
    with pytest.raises(ModelFileError) as err:
        read_model_file(tmp_path)
    assert "without an MLmodel file" in err.value.message


def test_mlmodel_is_read_safely_no_yaml_tag_runs(mlflow_folders, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(mlflow_folders / "booster", folder)
    marker = tmp_path / "ran"
    (folder / "MLmodel").write_text(
        f"flavors: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    with pytest.raises(InvalidMlflowModel) as err:
        read_model_file(folder)
    assert not marker.exists()
    assert "not valid YAML" in err.value.message


def test_an_mlflow_data_path_outside_the_folder_is_refused(mlflow_folders, tmp_path, demo_models):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(mlflow_folders / "booster", folder)
    shutil.copy(demo_models["churn"].path, tmp_path / "outside.txt")
    text = (folder / "MLmodel").read_text().replace("data: model.lgb", "data: ../outside.txt")
    (folder / "MLmodel").write_text(text)
    with pytest.raises(InvalidMlflowModel) as err:
        read_model_file(folder)
    assert "outside the folder" in err.value.message


# -- the command line -----------------------------------------------------------------------

def upload(container, azurite, *args: str) -> int:
    return cli(["upload-model", *args, "--seconds", "0.3", "--no-compile", "--container",
                container.container_name,
                "--connection-string", azurite.connection_string])


def test_upload_model_takes_an_mlflow_folder_and_the_uploaded_model_serves(
        mlflow_folders, cancer, container, azurite, capsys):
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore

    clf, X = cancer
    folder = mlflow_folders / "booster"
    assert upload(container, azurite, str(folder), "cancer") == 0
    out = capsys.readouterr().out
    trees = clf.booster_.num_trees()
    assert (f"found: LightGBM text model (from MLflow folder {folder}, flavor lightgbm, file "
            f"model.lgb), {trees} trees, {X.shape[1]} features, 0 categorical, binary") in out
    assert container.download_blob("cancer.txt").readall() == (folder / "model.lgb").read_bytes()
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    try:
        model, _ = store.get("cancer")
        np.testing.assert_array_equal(model.predict(matrix(X)), clf.predict_proba(X)[:, 1])
    finally:
        store.close()


def test_upload_model_refuses_a_joblib_file_in_one_line_and_uploads_nothing(
        cancer, container, azurite, tmp_path, capsys):
    joblib = pytest.importorskip("joblib")
    clf, _ = cancer
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)
    assert upload(container, azurite, str(path), "cancer") == 1
    err = capsys.readouterr().err
    assert err.startswith("not uploaded: pickled_model:") and err.count("\n") == 1
    assert SKLEARN_HOW in err and "Traceback" not in err
    assert list(container.list_blobs()) == []


def test_upload_model_refuses_an_mlflow_folder_of_another_flavor(mlflow_folders, container, azurite,
                                                                capsys):
    assert upload(container, azurite, str(mlflow_folders / "sklearn_flavor"), "cancer") == 1
    err = capsys.readouterr().err
    assert err.startswith("not uploaded: unsupported_mlflow_model:") and err.count("\n") == 1
    assert list(container.list_blobs()) == []
