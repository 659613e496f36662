//! The simulated network: per-link cuts (partitions, one-way cuts) and a
//! quality (loss, duplication, delay) that the fault schedule changes.

use rand::rngs::SmallRng;
use rand::Rng;

#[derive(Debug)]
pub struct Network {
    n: usize,
    /// `cut[from * n + to]`: messages from `from` to `to` are lost.
    cut: Vec<bool>,
    /// Chance a message is lost.
    pub drop_p: f64,
    /// Chance a message is delivered twice.
    pub dup_p: f64,
    /// Chance a message takes a slow path (this reorders messages).
    slow_p: f64,
    /// Usual latency: 1..=fast_max time units.
    fast_max: u64,
    /// Slow path latency: 1..=slow_max time units.
    slow_max: u64,
}

impl Network {
    pub fn new(n: usize, tick: u64) -> Self {
        Network {
            n,
            cut: vec![false; n * n],
            drop_p: 0.0,
            dup_p: 0.0,
            slow_p: 0.05,
            fast_max: 3,
            slow_max: 3 * tick,
        }
    }

    pub fn up(&self, from: usize, to: usize) -> bool {
        !self.cut[from * self.n + to]
    }

    pub fn heal(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
    }

    /// Cuts every link between nodes of different `groups`.
    pub fn partition(&mut self, groups: &[usize]) {
        for from in 0..self.n {
            for to in 0..self.n {
                self.cut[from * self.n + to] = groups[from] != groups[to];
            }
        }
    }

    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.cut[from * self.n + to] = true;
    }

    pub fn isolate(&mut self, node: usize) {
        for other in 0..self.n {
            if other != node {
                self.cut[node * self.n + other] = true;
                self.cut[other * self.n + node] = true;
            }
        }
    }

    /// A new random quality: from a clean LAN to a lossy, jittery one.
    pub fn reshape(&mut self, rng: &mut SmallRng) {
        let lossy = rng.random_bool(0.5);
        self.drop_p = if lossy {
            rng.random_range(0.0..0.3)
        } else {
            0.0
        };
        self.dup_p = if rng.random_bool(0.5) {
            rng.random_range(0.0..0.15)
        } else {
            0.0
        };
        self.slow_p = rng.random_range(0.0..0.3);
    }

    /// Lossless, no duplicates, short delays: for the liveness phase.
    pub fn calm(&mut self) {
        self.drop_p = 0.0;
        self.dup_p = 0.0;
        self.slow_p = 0.0;
    }

    /// The latency of one delivery.
    pub fn delay(&self, rng: &mut SmallRng) -> u64 {
        if self.slow_p > 0.0 && rng.random_bool(self.slow_p) {
            rng.random_range(1..=self.slow_max)
        } else {
            rng.random_range(1..=self.fast_max)
        }
    }

    pub fn describe(&self) -> String {
        let cuts: Vec<String> = (0..self.n * self.n)
            .filter(|&i| self.cut[i])
            .map(|i| format!("{}->{}", i / self.n + 1, i % self.n + 1))
            .collect();
        format!(
            "drop {:.2} dup {:.2} slow {:.2} cut [{}]",
            self.drop_p,
            self.dup_p,
            self.slow_p,
            cuts.join(" ")
        )
    }
}
