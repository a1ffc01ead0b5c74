//! The CRI ImageService. Pulling and storing images is its own issue; until
//! it lands every RPC answers `Unimplemented`.

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::*;

use super::cri_service;

/// The ImageService implementation.
#[derive(Debug, Default)]
pub struct CriImageService;

cri_service! {
    impl ImageService for CriImageService {}
    unimplemented {
        list_images(ListImagesRequest) -> ListImagesResponse = "ListImages";
        image_status(ImageStatusRequest) -> ImageStatusResponse = "ImageStatus";
        pull_image(PullImageRequest) -> PullImageResponse = "PullImage";
        remove_image(RemoveImageRequest) -> RemoveImageResponse = "RemoveImage";
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse = "ImageFsInfo";
    }
}
