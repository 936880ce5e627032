//! A DNS responder on loopback, standing in for the public DNS that answers RDS
//! endpoint names with private addresses (the emulator's names resolve nowhere).
//! Tests change its answers to play a failover, a lagging record or a bad name.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Clone)]
pub struct DnsResponder {
    pub addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsResponder {
    pub async fn start() -> DnsResponder {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>> = Arc::default();
        let known = records.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buffer).await else { return };
                let Ok(request) = Message::from_vec(&buffer[..len]) else { continue };
                let answer = answer(&request, &known.lock().unwrap());
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        DnsResponder { addr, records }
    }

    /// Answers `name` with `addresses` from now on (none: the name exists without an A record).
    pub fn set(&self, name: &str, addresses: &[Ipv4Addr]) {
        self.records.lock().unwrap().insert(key(name), addresses.to_vec());
    }
}

fn answer(request: &Message, records: &HashMap<String, Vec<Ipv4Addr>>) -> Message {
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    for query in &request.queries {
        response.add_query(query.clone());
        match records.get(&key(&query.name.to_ascii())) {
            None => response.metadata.response_code = ResponseCode::NXDomain,
            Some(addresses) if query.query_type == RecordType::A => {
                for address in addresses {
                    response.add_answer(Record::from_rdata(query.name.clone(), 1, RData::A(A(*address))));
                }
            }
            Some(_) => {}
        }
    }
    response
}
