//! The other ImageService RPCs on real containerd after a pull: ListImages, ImageStatus,
//! RemoveImage, ImageFsInfo.

use regcred_tests::harness::basic_auth;

use super::HtpasswdWorld;

#[tokio::test]
async fn list_status_and_remove_after_a_pull() {
    let mut world = HtpasswdWorld::start("image-service").await;
    let reference = world.reference.clone();
    assert_eq!(
        world
            .cri
            .image_status(&reference)
            .await
            .expect("ImageStatus"),
        None,
        "not pulled yet"
    );

    let auth = basic_auth(&world.registry.url(), world.user, &world.password);
    world
        .cri
        .pull(&reference, Some(auth), None)
        .await
        .expect("pulled");

    let image_id = world.image.config_digest().to_owned();
    let by_digest = format!(
        "{}@{}",
        reference.rsplit_once(':').expect("tag").0,
        world.image.manifest_digest()
    );
    let images = world.cri.list_images().await.expect("ListImages");
    let listed = images
        .iter()
        .find(|image| image.id == image_id)
        .expect("pulled image listed");
    assert_eq!(listed.repo_tags, std::slice::from_ref(&reference));
    assert_eq!(listed.repo_digests, std::slice::from_ref(&by_digest));
    assert!(listed.size > 0);

    for name in [&reference, &by_digest, &image_id] {
        let status = world
            .cri
            .image_status(name)
            .await
            .expect("ImageStatus")
            .expect("image known");
        assert_eq!(status.id, image_id, "looked up as {name}");
    }

    let fs = world.cri.image_fs_info().await.expect("ImageFsInfo");
    let mountpoint = &fs
        .image_filesystems
        .first()
        .expect("one image filesystem")
        .fs_id
        .as_ref()
        .expect("fs id")
        .mountpoint;
    assert!(
        mountpoint.contains("regcred-containerd-"),
        "containerd's own root: {mountpoint}"
    );

    world
        .cri
        .remove_image(&reference)
        .await
        .expect("RemoveImage");
    assert_eq!(
        world
            .cri
            .image_status(&reference)
            .await
            .expect("ImageStatus"),
        None
    );
    assert!(
        world
            .cri
            .list_images()
            .await
            .expect("ListImages")
            .iter()
            .all(|image| image.id != image_id)
    );
    world
        .cri
        .remove_image(&reference)
        .await
        .expect("RemoveImage of an absent image is not an error");
    world.assert_password_not_logged();
}
