"""File writers: atomic, and durable when asked."""

from tests.conftest import inode, synced_around
from tf_alexnet.files import sync_tree, write_atomic


def test_a_durable_write_syncs_the_file_before_its_rename_and_the_rename_after(
    tmp_path, disk_syncs
):
    """The bytes were synced, the rename not: after a power loss the training's backup metadata
    could still be the old one, naming weights already deleted."""
    path = tmp_path / "metadata.json"
    for data in ("{}", b"{}"):
        disk_syncs.clear()
        write_atomic(path, data, durable=True)
        before, after = synced_around(disk_syncs, path)
        assert inode(path) in before and inode(tmp_path) in after
    disk_syncs.clear()
    write_atomic(path, "{}")
    assert [kind for kind, *_ in disk_syncs] == ["replace"]  # not durable: no sync asked


def test_sync_tree_syncs_files_and_folders_but_follows_no_link(tmp_path, disk_syncs):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "file").write_text("data")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    (tmp_path / "a" / "file-link").symlink_to(tmp_path / "a" / "b" / "file")
    sync_tree(tmp_path / "a")
    synced = {event[1] for event in disk_syncs}
    expected = {inode(tmp_path / p) for p in ("a", "a/b", "a/b/file")}
    assert synced == expected
    sync_tree(tmp_path)
    assert inode(outside) not in {event[1] for event in disk_syncs}
