"""Defaults the GeoML dialogs pick on their own: the label field of Fine-tune."""
import pytest
from qgis.core import QgsFields, QgsProject, QgsSettings, QgsVectorLayer

from tests.qgis.conftest import FakePlugin


def _points(spec: str, name: str = "labels") -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Point?crs=EPSG:32632&{spec}", name, "memory")
    assert layer.isValid()
    return layer


def _fields(spec: str) -> QgsFields:
    return _points(spec).fields()


@pytest.mark.parametrize("spec,task,expected", [
    ("field=fid:integer&field=id:integer&field=class_name:string", "classification", "class_name"),
    ("field=fid:integer&field=Name:string&field=LandCover:string", "classification", "LandCover"),
    ("field=fid:integer&field=classe:string&field=name:string", "classification", "name"),  # exact first
    ("field=fid:integer&field=classe:string", "classification", "classe"),  # then prefix
    ("field=fid:integer&field=uuid:string&field=note:string", "classification", "note"),  # text, not an id
    ("field=fid:integer&field=code:integer", "classification", "code"),  # the first that is not fid
    ("field=fid:integer", "classification", "fid"),
    ("field=fid:integer&field=class:string&field=height:double", "regression", "height"),
    ("field=fid:integer&field=class:string", "regression", "class"),  # no number: as for classes
])
def test_default_label_field(qgis_app, spec, task, expected):
    from geoml_plugin.gui.finetune_dialog import default_label_field

    assert default_label_field(_fields(spec), task) == expected


@pytest.fixture()
def finetune(qtbot, qgis_iface, qgis_new_project):
    from geoml_plugin.gui.finetune_dialog import FinetuneDialog

    QgsSettings().remove("geoml/finetune")

    def make(layer):
        QgsProject.instance().addMapLayer(layer)
        dlg = FinetuneDialog(FakePlugin(qgis_iface))
        qtbot.addWidget(dlg)
        dlg.labelsLayer.setLayer(layer)
        return dlg

    yield make
    QgsSettings().remove("geoml/finetune")


def test_finetune_label_field_is_not_fid_by_default(finetune):
    dlg = finetune(_points("field=fid:integer&field=id:integer&field=class_name:string&field=height:double"))
    assert dlg.labelField.currentField() == "class_name"  # before: 'fid', one class per feature
    dlg.taskCombo.setCurrentIndex(dlg.taskCombo.findData("regression"))
    assert dlg.labelField.currentField() == "height"
    dlg.taskCombo.setCurrentIndex(dlg.taskCombo.findData("classification"))
    assert dlg.labelField.currentField() == "class_name"
    dlg.labelField.setField("id")
    dlg.labelField.activated.emit(dlg.labelField.currentIndex())  # as when the user picks it
    dlg.taskCombo.setCurrentIndex(dlg.taskCombo.findData("regression"))
    assert dlg.labelField.currentField() == "id"


def test_finetune_keeps_a_remembered_or_chosen_label_field(finetune):
    QgsSettings().setValue("geoml/finetune/field", "id")
    dlg = finetune(_points("field=fid:integer&field=id:integer&field=class_name:string&field=height:double"))
    assert dlg.labelField.currentField() == "id"
    dlg.taskCombo.setCurrentIndex(dlg.taskCombo.findData("regression"))
    assert dlg.labelField.currentField() == "id"  # remembered: a change of task keeps it
    QgsSettings().setValue("geoml/finetune/field", "not_here")
    other = _points("field=fid:integer&field=label:string&field=value:double", "other")
    QgsProject.instance().addMapLayer(other)
    dlg.labelsLayer.setLayer(other)
    assert dlg.labelField.currentField() == "value"  # regression still selected: a number
