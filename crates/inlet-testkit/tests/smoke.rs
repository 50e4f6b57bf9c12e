//! One real round trip per service, through the testkit. If these fail,
//! every other integration test would too: they check the test set-up.

use std::time::Duration;

use deadpool_redis::redis;
use futures::StreamExt as _;
use inlet_testkit::{TestAmqp, TestMongo, TestRedis};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use mongodb::bson::{Document, doc};

#[tokio::test]
async fn redis_set_get_round_trip() {
    let r = TestRedis::new().await;
    let key = format!("{}smoke", r.prefix);
    let mut conn = r.pool.get().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    let got: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some("hello"));
    r.cleanup().await;
    let gone: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(gone, None, "cleanup removes the test's keys");
}

#[tokio::test]
async fn amqp_publish_with_confirm_and_consume_round_trip() {
    let amqp = TestAmqp::new();
    let queue = amqp.name("smoke");
    let conn = amqp.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"hello broker",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "broker acked without returning: {confirm:?}"
    );
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "smoke".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("stream open")
        .expect("delivery ok");
    assert_eq!(delivery.data, b"hello broker");
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    drop(conn);
    amqp.cleanup(&["smoke"], &[]).await;
}

#[tokio::test]
async fn mongo_insert_find_round_trip() {
    let m = TestMongo::new().await;
    let coll = m.db().collection::<Document>("smoke");
    coll.insert_one(doc! { "_id": 1, "greeting": "hello" })
        .await
        .unwrap();
    let found = coll.find_one(doc! { "_id": 1 }).await.unwrap().unwrap();
    assert_eq!(found.get_str("greeting").unwrap(), "hello");
    m.cleanup().await;
}
