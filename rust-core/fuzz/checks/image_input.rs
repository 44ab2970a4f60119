//! Arbitrary bytes as an image file (JPEG, PNG, WebP), through the path the engine takes: the
//! public `ImageInput::from_bytes` + `with_max_soft_tokens`, then the patch preprocessing the
//! vision tower consumes. The budget is picked from the input's length so that plain image
//! files are valid seeds.

use gemmakit::GemmaError;
use gemmakit::media::ImageInput;
use gemmakit::media::image::{
    ImageParams, SUPPORTED_SOFT_TOKEN_BUDGETS, decode_image, preprocess, soft_token_count,
};

use super::Outcome;

pub fn run(data: &[u8]) -> Outcome {
    let budget = SUPPORTED_SOFT_TOKEN_BUDGETS[data.len() % SUPPORTED_SOFT_TOKEN_BUDGETS.len()];
    let input = match ImageInput::from_bytes(data) {
        Ok(input) => input,
        Err(e @ GemmaError::InvalidImage(_)) => return Outcome::Rejected(e.to_string()),
        Err(e) => panic!("a bad image is InvalidImage, got {e:?}"),
    };
    let input = input
        .with_max_soft_tokens(budget)
        .expect("a supported budget is accepted");
    assert!(input.clone().with_max_soft_tokens(budget + 1).is_err());

    // The engine preprocesses the decoded image (`ImageInput` holds it privately).
    let img = decode_image(data).expect("decodes as from_bytes did");
    assert_eq!((img.width(), img.height()), (input.width(), input.height()));
    let params = ImageParams::for_budget(budget).unwrap();
    let pre = preprocess(&img, &params).expect("a decoded image preprocesses");
    let (w, h) = (img.width() as usize, img.height() as usize);
    assert_eq!(
        pre.num_soft_tokens,
        soft_token_count(w, h, &params).unwrap()
    );
    assert!(pre.num_soft_tokens <= budget);
    assert!(pre.num_patches <= params.max_patches());
    assert_eq!(pre.max_patches(), params.max_patches());
    assert_eq!(
        pre.pixel_values.len(),
        params.max_patches() * params.patch_len()
    );
    assert_eq!(pre.patch_grid.0 * pre.patch_grid.1, pre.num_patches);
    assert!(pre.pixel_values.iter().all(|v| (0.0..=1.0).contains(v)));
    let patches = pre.patches();
    for (i, &[x, y]) in patches.position_ids.iter().enumerate() {
        if i < pre.num_patches {
            assert!((x as usize) < pre.patch_grid.1 && (y as usize) < pre.patch_grid.0);
        } else {
            assert_eq!([x, y], [-1, -1]);
        }
    }
    Outcome::Accepted
}
