//! `ditkd featnet`: train the FID-proxy feature network and measure its accuracy and metric floor.

use std::path::Path;

use anyhow::Result;
use distill::data::{DataConfig, Split};
use distill::featnet::{FeatNet, FEAT_DIM};

pub fn run(out: &Path, epochs: usize, seed: u64) -> Result<()> {
    let data = DataConfig::default();
    let train = data.load(Split::Train)?;
    let test = data.load(Split::Test)?;
    let dev = crate::device::get();
    let t0 = std::time::Instant::now();
    let mut net = FeatNet::new(train.channels, train.height, train.num_classes, seed, &dev)?;
    net.train(&train, epochs, seed, true)?;
    net.meta.test_accuracy = net.accuracy(&test)?;
    net.meta.dataset = data.name.clone();
    // Floor: 5,000 real training images (seeded pick) against the whole test set.
    let mut order = distill::order::DataOrder::new(seed ^ 0xF1D, train.len());
    let (held, _) = train.gather(&order.batch(0, 5000));
    let f_held = net.features_of(&held, 500)?;
    let f_test = net.features_of(&test.images, 500)?;
    let floor = distill::metrics::frechet_distance(&f_test, &f_held, FEAT_DIM)?;
    net.meta.fid_proxy_floor = Some(floor);
    net.meta.wall_time_s = t0.elapsed().as_secs_f64();
    let dir = distill::paths::output(out);
    net.save(&dir)?;
    println!(
        "feature net: test accuracy {:.2}% after {epochs} epochs, FID-proxy floor {:.3} (5k train vs 10k test), {:.0} s; saved to {} (hash {})",
        100.0 * net.meta.test_accuracy,
        floor,
        net.meta.wall_time_s,
        dir.display(),
        FeatNet::hash(&dir)?
    );
    Ok(())
}
