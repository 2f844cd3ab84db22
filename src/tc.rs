//! Linux traffic control over rtnetlink: bandwidth limits, set up as the
//! CNI reference `bandwidth` plugin does, and the `bpf` filters that carry
//! the fast path (`crate::fastpath`).
//!
//! - A container's *ingress* limit is a token bucket filter (tbf) at the root
//!   of the host-side veth: what the host sends toward the container leaves
//!   through that device's queue. See [`Rtnl::shape`].
//! - A container's *egress* limit is harder: its traffic *arrives* on the
//!   host-side veth, and a device's receive path has no queue that could
//!   delay packets (only policing, which drops them). So everything arriving
//!   there is redirected to an ifb device, whose transmit queue gets the tbf;
//!   the ifb hands each packet back to the veth's receive path once the
//!   bucket lets it go. See [`Rtnl::add_ifb`] and [`Rtnl::redirect_ingress`].
//!
//! `netlink-packet-route` has ingress qdisc, u32 filter and mirred action
//! types but no tbf; its options are encoded here ([`Tbf`]), with the units
//! iproute2's `tc` uses.

use std::io;

use rtnetlink::packet_core::{DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcFilterU32Option,
    TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use crate::netlink::Rtnl;

pub use crate::model::Limit;

/// How long a packet may wait in a token bucket's queue. The queue holds what
/// the rate drains in this time plus one burst; more is dropped, which keeps
/// a shaped link's latency bounded. 25 ms is the reference plugin's choice.
const LATENCY_USEC: f64 = 25_000.0;

/// iproute2's time unit: microseconds.
const USEC_PER_SEC: f64 = 1_000_000.0;

/// The root qdisc's handle, `1:` as the reference plugin uses.
const TBF_HANDLE: TcHandle = TcHandle { major: 1, minor: 0 };

/// The ingress qdisc's handle, `ffff:`; its filters hang off it.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

// TCA_TBF_* attributes inside TCA_OPTIONS (linux/pkt_sched.h).
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;

/// tc_ratespec.linklayer: count Ethernet frames as they are (not ATM cells).
/// The kernel only wants a rate table (TCA_TBF_RTAB) for rates whose link
/// layer is unknown, so with this set none is sent.
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// ETH_P_ALL: a filter for every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// The filter's priority (`pref 1`).
const FILTER_PRIORITY: u16 = 1;

/// A qdisc's shared filter blocks (TCA_INGRESS_BLOCK, TCA_EGRESS_BLOCK).
const TCA_INGRESS_BLOCK: u16 = 13;
const TCA_EGRESS_BLOCK: u16 = 14;

/// The link index that names a shared block instead (in tcm_ifindex, with
/// the block's index in tcm_parent).
const TCM_IFINDEX_MAGIC_BLOCK: i32 = -1;

impl Rtnl {
    /// Shapes traffic leaving through link `index` with a token bucket (root
    /// tbf qdisc): `limit.rate` on average, bursts of up to `limit.burst`, and
    /// at most 25 ms of traffic queued beyond the burst. Replaces a root qdisc
    /// already there, so applying a new limit is the same call.
    ///
    /// A burst smaller than the link's MTU lets no full-size packet through.
    pub fn shape(&mut self, index: u32, limit: Limit) -> io::Result<()> {
        let tbf = Tbf::new(limit, psched_ticks_per_usec()?)?;
        let msg = tbf.message(ifindex(index)?);
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Creates an ifb device `name` (up).
    pub fn add_ifb(&mut self, name: &str) -> io::Result<()> {
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Ifb)
            .name(name.to_string())
            .up()
            .build();
        self.create(RouteNetlinkMessage::NewLink(msg))
    }

    /// Redirects everything arriving on `index` to `ifb` (ingress qdisc + a
    /// filter with a mirred egress-redirect action). The filter is u32
    /// matching every packet, as in the reference plugin: `matchall` would
    /// say the same more plainly but is missing from kernels built without
    /// CONFIG_NET_CLS_MATCHALL, while u32 is nearly always there.
    pub fn redirect_ingress(&mut self, index: u32, ifb: u32) -> io::Result<()> {
        let dev = ifindex(index)?;
        self.create(RouteNetlinkMessage::NewQueueDiscipline(ingress_message(
            dev,
        )))?;
        let filter = redirect_filter_message(dev, ifb);
        if let Err(e) = self.create(RouteNetlinkMessage::NewTrafficFilter(filter)) {
            // Leave nothing half done: an ingress qdisc without the filter
            // would only make a retry fail with EEXIST.
            let _ = self.change(RouteNetlinkMessage::DelQueueDiscipline(ingress_message(
                dev,
            )));
            return Err(e);
        }
        Ok(())
    }
}

impl Rtnl {
    /// Runs program `prog` (a loaded sched_cls program's descriptor) on
    /// everything arriving on link `index`, as a direct-action `bpf` filter
    /// on a clsact qdisc (made unless the link has one).
    pub fn attach_ingress_program(&mut self, index: u32, prog: i32, name: &str) -> io::Result<()> {
        self.attach_ingress_program_at(index, FILTER_PRIORITY, prog, name)
    }

    /// [`Rtnl::attach_ingress_program`] at filter priority `priority`: for a
    /// device rete does not own, where `pref 1` may be someone else's.
    pub fn attach_ingress_program_at(
        &mut self,
        index: u32,
        priority: u16,
        prog: i32,
        name: &str,
    ) -> io::Result<()> {
        let dev = ifindex(index)?;
        match self.create(RouteNetlinkMessage::NewQueueDiscipline(clsact_message(dev))) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other?,
        }
        self.create(RouteNetlinkMessage::NewTrafficFilter(bpf_filter_message(
            dev, priority, prog, name,
        )))
    }

    /// Gives link `index` a clsact qdisc whose ingress is the shared filter
    /// block `ingress` and whose egress the shared block `egress` (made
    /// with the first qdisc that names them, gone with the last): every
    /// link of the block runs its filters, added once with
    /// [`Rtnl::attach_block_program`]. A link with a qdisc of its own
    /// makes a block of its own, and the kernel walks a list of every such
    /// block on the host to make one: ~0.1 ms per link with hundreds.
    pub fn join_blocks(&mut self, index: u32, ingress: u32, egress: u32) -> io::Result<()> {
        let mut msg = clsact_message(ifindex(index)?);
        msg.attributes.push(TcAttribute::Other(DefaultNla::new(
            TCA_INGRESS_BLOCK,
            ingress.to_ne_bytes().to_vec(),
        )));
        msg.attributes.push(TcAttribute::Other(DefaultNla::new(
            TCA_EGRESS_BLOCK,
            egress.to_ne_bytes().to_vec(),
        )));
        self.create(RouteNetlinkMessage::NewQueueDiscipline(msg))
    }

    /// Gives link `index` an ingress qdisc whose filters are those of the
    /// shared block `block` (which a link's qdisc must hold already). It has
    /// no egress side, so the link is in no other block: removing a qdisc
    /// walks the list of every qdisc of each shared block it is in, ~0.17 ms
    /// per block with 1000 links, and a clsact's egress side would need a
    /// block, shared or made (see [`Rtnl::join_blocks`]).
    pub fn join_ingress_block(&mut self, index: u32, block: u32) -> io::Result<()> {
        let mut msg = ingress_message(ifindex(index)?);
        msg.attributes.push(TcAttribute::Other(DefaultNla::new(
            TCA_INGRESS_BLOCK,
            block.to_ne_bytes().to_vec(),
        )));
        self.create(RouteNetlinkMessage::NewQueueDiscipline(msg))
    }

    /// Adds program `prog` as a direct-action `bpf` filter to the shared
    /// block `block` (which a link's qdisc must hold already).
    pub fn attach_block_program(&mut self, block: u32, prog: i32, name: &str) -> io::Result<()> {
        let mut msg = bpf_filter_message(TCM_IFINDEX_MAGIC_BLOCK, FILTER_PRIORITY, prog, name);
        msg.header.parent = TcHandle::from(block);
        self.create(RouteNetlinkMessage::NewTrafficFilter(msg))
    }

    /// Removes every `bpf` ingress filter whose program is named `name` from
    /// link `index` (none there is not an error); other filters stay.
    pub fn detach_ingress_program(&mut self, index: u32, name: &str) -> io::Result<()> {
        for f in self.ingress_filters(index)? {
            if program_of(&f, name).is_some() {
                let mut del = TcMessage::with_index(f.header.index);
                del.header.parent = f.header.parent;
                del.header.handle = f.header.handle;
                del.header.info = f.header.info;
                del.attributes
                    .push(TcAttribute::Kind(TcFilterBpf::KIND.to_string()));
                match self.change(RouteNetlinkMessage::DelTrafficFilter(del)) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }

    /// The ingress filters of link `index` (none without a clsact qdisc).
    fn ingress_filters(&mut self, index: u32) -> io::Result<Vec<TcMessage>> {
        let mut msg = TcMessage::with_index(ifindex(index)?);
        msg.header.parent = clsact_ingress();
        let replies = match self.request(RouteNetlinkMessage::GetTrafficFilter(msg), NLM_F_DUMP) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewTrafficFilter(f) => Some(f),
                _ => None,
            })
            .collect())
    }

    /// The id of the first `bpf` ingress filter program named `name` on link
    /// `index`, if it has one.
    pub fn ingress_program(&mut self, index: u32, name: &str) -> io::Result<Option<u32>> {
        Ok(self.ingress_program_in(index, name)?.map(|(id, _)| id))
    }

    /// [`Rtnl::ingress_program`], and the shared block the filter is in,
    /// if it is in one (the kernel reports a shared block's filters by the
    /// block, not the link).
    pub fn ingress_program_in(
        &mut self,
        index: u32,
        name: &str,
    ) -> io::Result<Option<(u32, Option<u32>)>> {
        Ok(self.ingress_filters(index)?.iter().find_map(|f| {
            let block =
                (f.header.index == TCM_IFINDEX_MAGIC_BLOCK).then(|| u32::from(f.header.parent));
            program_of(f, name).map(|id| (id, block))
        }))
    }
}

/// The id of filter `f`'s program, when it is a `bpf` filter of a program
/// named `name`.
fn program_of(f: &TcMessage, name: &str) -> Option<u32> {
    f.attributes.iter().find_map(|a| {
        let TcAttribute::Options(opts) = a else {
            return None;
        };
        let named = opts
            .iter()
            .any(|o| matches!(o, TcOption::Bpf(TcFilterBpfOption::ProgName(n)) if n == name));
        let id = opts.iter().find_map(|o| match o {
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => Some(*id),
            _ => None,
        });
        id.filter(|_| named)
    })
}

/// The parent of ingress filters on a clsact qdisc (`ffff:fff2`).
fn clsact_ingress() -> TcHandle {
    TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    }
}

/// RTM_NEWQDISC body for the clsact qdisc of link `dev`.
fn clsact_message(dev: i32) -> TcMessage {
    let mut msg = TcMessage::with_index(dev);
    msg.header.handle = INGRESS_HANDLE;
    msg.header.parent = TcHandle::CLSACT;
    msg.attributes.push(TcAttribute::Kind("clsact".to_string()));
    msg
}

/// RTM_NEWTFILTER body: program `prog` as a direct-action `bpf` filter at
/// the ingress of link `dev`, for every protocol.
fn bpf_filter_message(dev: i32, priority: u16, prog: i32, name: &str) -> TcMessage {
    let mut msg = TcMessage::with_index(dev);
    msg.header.parent = clsact_ingress();
    msg.header.info = u32::from(TcHandle {
        major: priority,
        minor: ETH_P_ALL.to_be(),
    });
    msg.attributes
        .push(TcAttribute::Kind(TcFilterBpf::KIND.to_string()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_string())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    msg
}

/// tbf parameters in the kernel's units.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tbf {
    /// Bytes per second.
    rate: u64,
    /// Size of the bucket, in bytes.
    burst: u32,
    /// Bytes that may wait in the queue (bfifo limit).
    limit: u32,
    /// Time to send `burst` bytes at `rate`, in psched ticks.
    buffer: u32,
}

impl Tbf {
    /// Converts a limit in bits as iproute2's `tc qdisc add ... tbf rate R
    /// burst B latency 25ms` would: rates and sizes in bytes, the burst also
    /// as the time it takes to send at the rate (`buffer`, in psched ticks of
    /// which there are `ticks_per_usec` per microsecond), and the queue limit
    /// as `rate × latency + burst`.
    fn new(limit: Limit, ticks_per_usec: f64) -> io::Result<Tbf> {
        let rate = limit.rate / 8;
        let burst = limit.burst / 8;
        if rate == 0 {
            return Err(invalid("bandwidth rate must be at least 8 bit/s"));
        }
        if burst == 0 {
            return Err(invalid("bandwidth burst must be at least 8 bits"));
        }
        // TCA_TBF_BURST and the queue limit are 32-bit byte counts.
        let burst =
            u32::try_from(burst).map_err(|_| invalid("bandwidth burst must be under 4 GiB"))?;
        // Float-to-int `as` saturates, which is what a u32 field can do with
        // a too long time or too large queue.
        let usec = f64::from(burst) * USEC_PER_SEC / rate as f64;
        let buffer = (usec * ticks_per_usec) as u32;
        let queue = (rate as f64 * LATENCY_USEC / USEC_PER_SEC) as u64 + u64::from(burst);
        let limit = u32::try_from(queue).unwrap_or(u32::MAX);
        Ok(Tbf {
            rate,
            burst,
            limit,
            buffer,
        })
    }

    /// TCA_OPTIONS for tbf: TCA_TBF_PARMS (struct tc_tbf_qopt), TCA_TBF_BURST,
    /// and TCA_TBF_RATE64 for rates tc_ratespec's 32 bits cannot hold.
    fn options(&self) -> Vec<TcOption> {
        let rate32 = u32::try_from(self.rate).unwrap_or(u32::MAX);
        // struct tc_tbf_qopt { struct tc_ratespec rate, peakrate;
        //                      __u32 limit, buffer, mtu; }
        let mut parms = Vec::with_capacity(36);
        parms.extend_from_slice(&ratespec(rate32));
        parms.extend_from_slice(&[0; 12]); // no peak rate
        parms.extend_from_slice(&self.limit.to_ne_bytes());
        parms.extend_from_slice(&self.buffer.to_ne_bytes());
        parms.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only for a peak rate
        let mut options = vec![
            option(TCA_TBF_PARMS, parms),
            // With the burst in bytes the kernel computes the bucket's time
            // itself (from `buffer` only on kernels older than 3.13).
            option(TCA_TBF_BURST, self.burst.to_ne_bytes().to_vec()),
        ];
        if self.rate > u64::from(u32::MAX) {
            options.push(option(TCA_TBF_RATE64, self.rate.to_ne_bytes().to_vec()));
        }
        options
    }

    /// RTM_NEWQDISC body: this tbf as the root qdisc of link `dev`.
    fn message(&self, dev: i32) -> TcMessage {
        let mut msg = TcMessage::with_index(dev);
        msg.header.handle = TBF_HANDLE;
        msg.header.parent = TcHandle::ROOT;
        msg.attributes.push(TcAttribute::Kind("tbf".to_string()));
        msg.attributes.push(TcAttribute::Options(self.options()));
        msg
    }
}

/// struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead;
/// s16 cell_align; u16 mpu; u32 rate; }, rate in bytes per second.
fn ratespec(rate: u32) -> [u8; 12] {
    let mut spec = [0u8; 12];
    spec[1] = TC_LINKLAYER_ETHERNET;
    spec[8..].copy_from_slice(&rate.to_ne_bytes());
    spec
}

fn option(kind: u16, value: Vec<u8>) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value))
}

/// RTM_NEWQDISC / RTM_DELQDISC body for the ingress qdisc of link `dev`.
fn ingress_message(dev: i32) -> TcMessage {
    let mut msg = TcMessage::with_index(dev);
    msg.header.handle = INGRESS_HANDLE;
    msg.header.parent = TcHandle::INGRESS;
    msg.attributes
        .push(TcAttribute::Kind("ingress".to_string()));
    msg
}

/// RTM_NEWTFILTER body: on the ingress qdisc of `dev`, every packet of every
/// protocol (u32 with one key matching 0 under mask 0) is stolen and
/// redirected to the egress of link `to`.
fn redirect_filter_message(dev: i32, to: u32) -> TcMessage {
    let mut mirred = TcMirror::default();
    mirred.generic.action = TcActionType::Stolen;
    mirred.eaction = TcMirrorActionType::EgressRedir;
    mirred.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirred,
        ))]),
    ];

    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];

    let mut msg = TcMessage::with_index(dev);
    msg.header.parent = INGRESS_HANDLE;
    // tcm_info: priority in the upper half, the protocol in network byte
    // order in the lower.
    msg.header.info = u32::from(TcHandle {
        major: FILTER_PRIORITY,
        minor: ETH_P_ALL.to_be(),
    });
    msg.attributes.push(TcAttribute::Kind("u32".to_string()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    msg
}

/// psched ticks per microsecond, from /proc/net/psched as iproute2 reads it.
fn psched_ticks_per_usec() -> io::Result<f64> {
    let path = "/proc/net/psched";
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    parse_psched(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected {path}: {text:?}"),
        )
    })
}

/// Parses /proc/net/psched: hex words for nanoseconds per microsecond, nanoseconds
/// per tick, and the clock resolution (and a fourth word that iproute2 and
/// this ignore).
fn parse_psched(text: &str) -> Option<f64> {
    let mut words = text
        .split_whitespace()
        .map(|w| u32::from_str_radix(w, 16).ok());
    let mut t2us = words.next()??;
    let us2t = words.next()??;
    let clock_res = words.next()??;
    if us2t == 0 {
        return None;
    }
    // A kernel with a nanosecond clock resolution advertises a multiplier of
    // 1000 for old tc binaries that ignore the resolution; it really is 1.
    if clock_res == 1_000_000_000 {
        t2us = us2t;
    }
    let clock_factor = f64::from(clock_res) / USEC_PER_SEC;
    Some(f64::from(t2us) / f64::from(us2t) * clock_factor)
}

/// Link indices are `int` in tcmsg.
fn ifindex(index: u32) -> io::Result<i32> {
    i32::try_from(index).map_err(|_| invalid("link index out of range"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, NlaBuffer, NlasIterator};

    /// Today's kernels: /proc/net/psched with 64 ns ticks.
    const PSCHED: &str = "000003e8 00000040 000f4240 3b9aca00\n";

    fn ten_mbit() -> Limit {
        Limit {
            rate: 10_000_000,
            burst: 32 * 1024 * 8,
        }
    }

    #[test]
    fn psched_gives_ticks_per_microsecond() {
        // 1000 ns per µs / 64 ns per tick.
        assert_eq!(parse_psched(PSCHED), Some(15.625));
        // The nanosecond-resolution compatibility hack: a multiplier of 1.
        assert_eq!(
            parse_psched("000003e8 00000040 3b9aca00 3b9aca00"),
            Some(1000.0)
        );
        assert_eq!(parse_psched("garbage"), None);
        assert_eq!(parse_psched("000003e8 00000000 000f4240"), None);
    }

    #[test]
    fn units_are_bytes_and_ticks() {
        let tbf = Tbf::new(ten_mbit(), 15.625).unwrap();
        assert_eq!(
            tbf,
            Tbf {
                rate: 1_250_000,
                burst: 32_768,
                // 1.25 MB/s × 25 ms + 32 KiB
                limit: 31_250 + 32_768,
                // 32 KiB at 1.25 MB/s = 26 214.4 µs, × 15.625 ticks/µs
                buffer: 409_600,
            }
        );
    }

    #[test]
    fn bad_limits_are_refused() {
        for (rate, burst) in [(0, 8000), (7, 8000), (8000, 0), (8000, 7), (8000, 1 << 40)] {
            let e = Tbf::new(Limit { rate, burst }, 15.625).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{rate} {burst}");
        }
    }

    #[test]
    fn huge_values_saturate() {
        // At 1 byte/s, sending 4 GiB - 1 takes far more ticks than 32 bits
        // hold, and the queue would be larger than 4 GiB.
        let tbf = Tbf::new(
            Limit {
                rate: 8,
                burst: u64::from(u32::MAX) * 8,
            },
            15.625,
        )
        .unwrap();
        assert_eq!(tbf.buffer, u32::MAX);
        assert_eq!(tbf.limit, u32::MAX);
    }

    /// The options as the kernel receives them: (type, payload) pairs.
    fn emitted(tbf: &Tbf) -> Vec<(u16, Vec<u8>)> {
        let attr = TcAttribute::Options(tbf.options());
        let mut buf = vec![0u8; attr.buffer_len()];
        attr.emit(&mut buf);
        let outer = NlaBuffer::new_checked(&buf[..]).unwrap();
        assert_eq!(outer.kind(), 2, "TCA_OPTIONS");
        NlasIterator::new(outer.value())
            .map(|nla| {
                let nla = nla.unwrap();
                (nla.kind(), nla.value().to_vec())
            })
            .collect()
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn tbf_options_encoding() {
        let tbf = Tbf::new(ten_mbit(), 15.625).unwrap();
        let opts = emitted(&tbf);
        assert_eq!(opts.len(), 2, "no TCA_TBF_RATE64 under 2^32 bytes/s");

        let (kind, parms) = &opts[0];
        assert_eq!(*kind, TCA_TBF_PARMS);
        assert_eq!(parms.len(), 36, "sizeof(struct tc_tbf_qopt)");
        // rate: cell_log 0, linklayer ethernet, overhead, cell_align, mpu 0
        assert_eq!(&parms[..8], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u32_at(parms, 8), 1_250_000);
        assert_eq!(&parms[12..24], &[0; 12], "no peak rate");
        assert_eq!(u32_at(parms, 24), 64_018, "limit");
        assert_eq!(u32_at(parms, 28), 409_600, "buffer");
        assert_eq!(u32_at(parms, 32), 0, "mtu");

        assert_eq!(opts[1], (TCA_TBF_BURST, 32_768u32.to_ne_bytes().to_vec()));
    }

    #[test]
    fn rates_over_32_bits_go_in_rate64() {
        // 40 Gbit/s = 5 GB/s
        let tbf = Tbf::new(
            Limit {
                rate: 40_000_000_000,
                burst: 8 << 20,
            },
            15.625,
        )
        .unwrap();
        let opts = emitted(&tbf);
        assert_eq!(
            u32_at(&opts[0].1, 8),
            u32::MAX,
            "tc_ratespec.rate saturated"
        );
        assert_eq!(
            opts[2],
            (TCA_TBF_RATE64, 5_000_000_000u64.to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn tbf_is_the_root_qdisc() {
        let msg = Tbf::new(ten_mbit(), 15.625).unwrap().message(7);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // struct tcmsg: family, pad, ifindex, handle 1:0, parent TC_H_ROOT
        assert_eq!(&buf[..4], &[0; 4]);
        assert_eq!(u32_at(&buf, 4), 7);
        assert_eq!(u32_at(&buf, 8), 0x0001_0000);
        assert_eq!(u32_at(&buf, 12), 0xffff_ffff);
        // TCA_KIND "tbf\0"
        assert_eq!(&buf[20..28], &[8, 0, 1, 0, b't', b'b', b'f', 0]);
    }

    #[test]
    fn redirect_filter_encoding() {
        let msg = redirect_filter_message(7, 9);
        assert_eq!(u32::from(msg.header.parent), 0xffff_0000);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // tcm_info: pref 1, protocol ETH_P_ALL as a big-endian u16.
        let info = u32_at(&buf, 16);
        assert_eq!(info >> 16, 1);
        assert_eq!(u16::from_be((info & 0xffff) as u16), ETH_P_ALL);
        // The parser of the crate reads back what was meant.
        let parsed = <TcMessage as rtnetlink::packet_core::Parseable<[u8]>>::parse(&buf).unwrap();
        assert_eq!(parsed, msg);
        let Some(TcAttribute::Options(opts)) = parsed.attributes.get(1) else {
            panic!("no options: {parsed:?}");
        };
        let Some(TcOption::U32(TcFilterU32Option::Action(actions))) = opts.get(1) else {
            panic!("no action: {opts:?}");
        };
        let mirred = actions[0].attributes.iter().find_map(|a| match a {
            TcActionAttribute::Options(o) => o.iter().find_map(|o| match o {
                TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) => Some(p.clone()),
                _ => None,
            }),
            _ => None,
        });
        let mirred = mirred.expect("mirred parms");
        assert_eq!(mirred.ifindex, 9);
        assert_eq!(mirred.eaction, TcMirrorActionType::EgressRedir);
        assert_eq!(mirred.generic.action, TcActionType::Stolen);
    }
}
